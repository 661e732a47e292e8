//! DATA (RFC 5321 §4.1.1.4), BDAT (RFC 3030) and the end of a transaction.

use intake_core::{BodyType, Envelope, MailParams, Stage};
use intake_proto::{BdatDecoder, Body, DataDecoder, DataOutcome, replies};

use super::{ContentMode, Delivery, Effect, Pending, Session, Step};

impl Session {
    pub(super) fn handle_data(&mut self) -> Step {
        let Some(tx) = &mut self.tx else {
            return self.client_error(replies::MAIL_FIRST);
        };
        if tx.mode == ContentMode::Bdat {
            return self.client_error(replies::DATA_BDAT_MIX);
        }
        if tx.rcpt_to.is_empty() {
            return self.client_error(replies::RCPT_FIRST);
        }
        tx.mode = ContentMode::Data;
        Step::ReadData(
            replies::START_DATA,
            DataDecoder::new(self.cfg.max_message_size, self.cfg.line_endings),
        )
    }

    /// The DATA content ended with `outcome`.
    pub fn data_done(&mut self, outcome: DataOutcome) -> Step {
        match outcome {
            DataOutcome::Complete => self.content_complete(),
            DataOutcome::TooLarge => {
                self.tx = None;
                Step::Reply(replies::MESSAGE_TOO_BIG)
            }
            DataOutcome::BareLineEnding => {
                self.tx = None;
                self.client_error(replies::BARE_LINE_ENDING_DATA)
            }
        }
    }

    pub(super) fn handle_bdat(&mut self, size: u64, last: bool) -> Step {
        // The chunk's octets follow the command whatever we answer: always read them.
        let error = match &mut self.tx {
            None => Some(replies::MAIL_FIRST),
            Some(tx) if tx.rcpt_to.is_empty() => Some(replies::RCPT_FIRST),
            Some(tx) if tx.mode == ContentMode::Data => Some(replies::DATA_BDAT_MIX),
            Some(tx) => {
                tx.mode = ContentMode::Bdat;
                tx.bdat_size = tx.bdat_size.saturating_add(size);
                if tx.bdat_error.is_none() && tx.bdat_size > self.cfg.max_message_size {
                    tx.bdat_error = Some(replies::MESSAGE_TOO_BIG);
                }
                None
            }
        };
        if let Some(e) = error {
            // No transaction to attach the error to: remember it in a throw-away one.
            self.pending_chunk_error = Some(e);
            return Step::ReadChunk {
                decoder: BdatDecoder::new(size, false),
                keep: false,
            };
        }
        self.pending_chunk_error = None;
        let keep = self.tx.as_ref().is_some_and(|t| t.bdat_error.is_none());
        self.pending_last = last;
        Step::ReadChunk {
            decoder: BdatDecoder::new(size, keep),
            keep,
        }
    }

    /// The octets of the chunk announced by the last BDAT have been read.
    pub fn bdat_done(&mut self) -> Step {
        if let Some(e) = self.pending_chunk_error.take() {
            return self.client_error(e);
        }
        let last = self.pending_last;
        let Some(tx) = &mut self.tx else {
            return self.client_error(replies::MAIL_FIRST);
        };
        if let Some(e) = tx.bdat_error.clone() {
            if last {
                self.tx = None;
            }
            return Step::Reply(e);
        }
        if last {
            return self.content_complete();
        }
        Step::Reply(replies::CHUNK_OK.with_text(format!("{} octets received", tx.bdat_size)))
    }

    /// The content is complete: check it if there are content checks, else deliver.
    fn content_complete(&mut self) -> Step {
        self.ask(Pending::Data, Stage::Data, None)
            .unwrap_or_else(|| self.deliver())
    }

    /// Asks the driver to hand the message to the delivery targets.
    pub(super) fn deliver(&mut self) -> Step {
        let tx = self.tx.as_ref().expect("content only inside a transaction");
        let id = self.cfg.ids.next_id();
        let now = self.cfg.clock.now();
        let mut headers = vec![self.received_header(id, tx.rcpt_to.as_slice(), tx.smtputf8, now)];
        headers.extend(self.session_headers.iter().cloned());
        headers.extend(tx.headers.iter().cloned());
        if tx.score != 0.0 {
            tracing::debug!(%id, score = tx.score, "checks scored the message");
        }
        let mut findings = self
            .session_findings
            .as_deref()
            .cloned()
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
            received_at: now,
            findings: Box::new(findings),
        };
        self.pending = Some(Pending::Deliver(id));
        Step::Await(Effect::Deliver(delivery))
    }
}
