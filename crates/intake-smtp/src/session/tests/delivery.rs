//! What a complete message asks the targets for, and their answers folded into the reply.

use super::*;

/// A transaction to three recipients, up to the delivery.
fn three_recipients(s: &mut Session) -> Delivery {
    s.on_command(Command::Ehlo("c".into()));
    s.on_command(Command::Mail(MailFrom {
        address: "a@b".into(),
        size: None,
        body: Body::EightBitMime,
        smtputf8: true,
    }));
    for r in ["x@example.com", "y@example.com", "z@example.com"] {
        assert_eq!(reply(s.on_command(rcpt(r))).code, 250);
    }
    s.on_command(Command::Data);
    delivery(s.data_done(DataOutcome::Complete))
}

#[test]
fn the_delivery_keeps_body_and_smtputf8_for_a_relay() {
    let mut s = session(|_| {});
    let d = three_recipients(&mut s);
    assert_eq!(
        d.params,
        intake_core::MailParams {
            body: intake_core::BodyType::EightBitMime,
            smtputf8: true
        }
    );
    assert_eq!(d.envelope.rcpt_to.len(), 3);
}

#[test]
fn per_recipient_outcomes_fold_into_one_reply_after_data() {
    let ok = RcptOutcome::Accepted;
    let no = RcptOutcome::from_reply(550, "5.1.1 <y@example.com> User unknown");
    let later = RcptOutcome::from_reply(452, "4.2.2 Mailbox full");
    let cases = [
        (
            vec![ok.clone(), ok.clone(), ok.clone()],
            "250 2.0.0 Message accepted as ",
        ),
        (
            vec![no.clone(), no.clone(), no.clone()],
            "550 5.1.1 Downstream: <y@example.com> User unknown",
        ),
        (
            vec![ok.clone(), later.clone(), no.clone()],
            "452 4.2.2 Downstream: Mailbox full",
        ),
        // One of three refused for good: never a 250 that hides it, never a 5xx that
        // bounces mail two recipients got.
        (vec![ok.clone(), no.clone(), ok.clone()], "451 4.5.0 "),
    ];
    for (outcomes, want) in cases {
        let mut s = session(|_| {});
        three_recipients(&mut s);
        let report = DeliveryReport {
            rcpts: outcomes.clone(),
            stored: false,
            store_failed: false,
        };
        let r = reply(s.resume(Outcome::Delivered(report))).to_wire();
        assert!(r.starts_with(want), "{outcomes:?}: {r}");
        // Whatever the reply, the transaction is over: the client may start the next one.
        assert!(!s.in_transaction());
        assert_eq!(reply(s.on_command(mail("c@d"))).code, 250);
    }
}
