//! DATA (RFC 5321 §4.1.1.4), BDAT (RFC 3030) and the end of a transaction.

use intake_core::{BodyType, Envelope, MailParams, Stage};
use intake_proto::{BdatDecoder, Body, DataDecoder, DataOutcome, replies};

use super::{ContentMode, Delivery, Effect, Pending, Phase, Session, Stamp, Step};

impl Session {
    pub(super) fn handle_data(&mut self) -> Step {
        let Some(tx) = self.tx_mut() else {
            return self.client_error(replies::MAIL_FIRST);
        };
        if tx.mode == ContentMode::Bdat {
            return self.client_error(replies::DATA_BDAT_MIX);
        }
        if tx.rcpt_to.is_empty() {
            return self.client_error(replies::RCPT_FIRST);
        }
        tx.mode = ContentMode::Data;
        let Phase::Mail(tx) = self.take_phase() else {
            unreachable!("a transaction outside an effect or content is in Phase::Mail")
        };
        let decoder = DataDecoder::new(self.cfg.max_message_size, self.cfg.line_endings);
        self.phase = Phase::Data(tx, decoder);
        Step::ReadData(replies::START_DATA)
    }

    /// The DATA content ended with `outcome`.
    pub fn data_done(&mut self, outcome: DataOutcome) -> Step {
        match self.take_phase() {
            Phase::Data(tx, _) => self.phase = Phase::Mail(tx),
            other => {
                tracing::error!(phase = ?other, "end of DATA outside DATA");
                self.phase = other;
                return Step::Reply(replies::BAD_SEQUENCE);
            }
        }
        match outcome {
            DataOutcome::Complete => self.content_complete(),
            DataOutcome::TooLarge => {
                self.end_transaction();
                Step::Reply(replies::MESSAGE_TOO_BIG)
            }
            DataOutcome::BareLineEnding => {
                self.end_transaction();
                self.client_error(replies::BARE_LINE_ENDING_DATA)
            }
        }
    }

    pub(super) fn handle_bdat(&mut self, size: u64, last: bool) -> Step {
        let max = self.cfg.max_message_size;
        // The chunk's octets follow the command whatever we answer: always read them.
        let refusal = match self.tx_mut() {
            None => Some(replies::MAIL_FIRST),
            Some(tx) if tx.rcpt_to.is_empty() => Some(replies::RCPT_FIRST),
            Some(tx) if tx.mode == ContentMode::Data => Some(replies::DATA_BDAT_MIX),
            Some(tx) => {
                tx.mode = ContentMode::Bdat;
                tx.bdat_size = tx.bdat_size.saturating_add(size);
                if tx.bdat_error.is_none() && tx.bdat_size > max {
                    tx.bdat_error = Some(replies::MESSAGE_TOO_BIG);
                }
                None
            }
        };
        let keep = refusal.is_none() && self.tx().is_some_and(|t| t.bdat_error.is_none());
        let tx = match self.take_phase() {
            Phase::Mail(tx) => Some(tx),
            _ => None,
        };
        self.phase = Phase::Chunk {
            tx,
            decoder: BdatDecoder::new(size, keep),
            last,
            refusal: refusal.map(Box::new),
        };
        Step::ReadChunk { keep }
    }

    /// The octets of the chunk announced by the last BDAT have been read.
    pub fn bdat_done(&mut self) -> Step {
        let (tx, last, refusal) = match self.take_phase() {
            Phase::Chunk {
                tx, last, refusal, ..
            } => (tx, last, refusal),
            other => {
                tracing::error!(phase = ?other, "end of a BDAT chunk outside BDAT");
                self.phase = other;
                return Step::Reply(replies::BAD_SEQUENCE);
            }
        };
        self.back_to(tx);
        if let Some(e) = refusal {
            return self.client_error(*e);
        }
        let Some(tx) = self.tx() else {
            return self.client_error(replies::MAIL_FIRST);
        };
        if let Some(e) = tx.bdat_error.clone() {
            if last {
                self.end_transaction();
            }
            return Step::Reply(e);
        }
        if last {
            return self.content_complete();
        }
        Step::Reply(replies::CHUNK_OK.with_text(format!("{} octets received", tx.bdat_size)))
    }

    /// The content is complete: it gets its id and our `Received:`, then the content
    /// checks if there are any, then delivery.
    fn content_complete(&mut self) -> Step {
        let tx = self.tx().expect("content only inside a transaction");
        let id = self.cfg.ids.next_id();
        let at = self.cfg.clock.now();
        let received = self.received_header(id, tx.rcpt_to.as_slice(), tx.smtputf8, at);
        let stamp = Stamp { id, at, received };
        if self.cfg.checks.has(Stage::Data) {
            return self
                .ask(Pending::Data(Box::new(stamp)), Stage::Data, None)
                .expect("checked above");
        }
        self.deliver(stamp)
    }

    /// The header fields in front of the content, in order: `received`, then those the
    /// session's and the transaction's checks added so far.
    pub(super) fn header_fields(&self, received: &str) -> Vec<String> {
        let mut headers = vec![received.to_string()];
        if let Some(t) = &self.session_tags {
            headers.extend(t.headers.iter().cloned());
        }
        if let Some(tx) = self.tx() {
            headers.extend(tx.headers.iter().cloned());
        }
        headers
    }

    /// Asks the driver to hand the message to the delivery targets.
    pub(super) fn deliver(&mut self, stamp: Stamp) -> Step {
        let Stamp { id, at, received } = stamp;
        let headers = self.header_fields(&received);
        let tx = self.tx().expect("content only inside a transaction");
        if tx.score != 0.0 {
            tracing::debug!(%id, score = tx.score, "checks scored the message");
        }
        let mut findings = self
            .session_tags
            .as_ref()
            .map(|t| t.findings.clone())
            .unwrap_or_default();
        findings.merge(tx.findings.clone());
        let delivery = Delivery {
            envelope: Envelope {
                mail_from: tx.mail_from.clone(),
                rcpt_to: tx.rcpt_to.clone(),
            },
            session: self.info(),
            params: MailParams {
                body: match tx.body {
                    Body::EightBitMime | Body::BinaryMime => BodyType::EightBitMime,
                    Body::SevenBit => BodyType::SevenBit,
                },
                smtputf8: tx.smtputf8,
            },
            headers,
            id,
            received_at: at,
            findings: Box::new(findings),
        };
        self.wait(Pending::Deliver(id), Effect::Deliver(delivery))
    }
}
