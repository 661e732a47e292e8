//! The Mailpit API's routes that reach beyond the store, over real sockets: chaos triggers
//! answered over a real SMTP session, releases and `send` through a real downstream (a
//! second Intake), and `sa-check` through a real spamd.

use std::net::SocketAddr;
use std::time::Duration;

use crate::http::{Response, get, request_with_body};
use crate::support::{Client, TestServer, send_message};

/// A JSON request to the Mailpit listener.
async fn call(addr: SocketAddr, method: &str, path: &str, body: &str) -> Response {
    request_with_body(
        addr,
        method,
        path,
        &[("content-type", "application/json")],
        body.as_bytes(),
    )
    .await
}

/// One message caught by `srv`, over SMTP.
async fn catch_one(srv: &TestServer) {
    let r = send_message(
        srv.addr,
        "a@example.net",
        &["b@example.test"],
        "Subject: x\r\n\r\nx\r\n",
    )
    .await;
    assert_eq!(r.head(), "250 2.0.0", "{}", r.text());
}

/// `PUT /api/v1/chaos` with `body`.
async fn set_chaos(api: SocketAddr, body: &str) -> Response {
    call(api, "PUT", "/api/v1/chaos", body).await
}

fn mailpit(srv: &TestServer) -> SocketAddr {
    srv.running.mailpit_addr.expect("the Mailpit listener")
}

/// The replies to EHLO, MAIL FROM and RCPT TO, as `code text` lines.
async fn envelope(addr: SocketAddr) -> Vec<String> {
    let mut c = Client::greeted(addr).await;
    let mut out = Vec::new();
    for line in [
        "EHLO client.test",
        "MAIL FROM:<a@example.net>",
        "RCPT TO:<b@example.test>",
    ] {
        let r = c.cmd(line).await;
        out.push(r.lines.last().cloned().unwrap_or_default());
    }
    out
}

#[tokio::test]
async fn chaos_triggers_answer_their_codes_over_smtp_until_reset() {
    let srv = TestServer::start(
        "[smtp]\ndomains = [\"example.test\"]\n[auth]\nenabled = true\nallow_plaintext = true\n\
         [mailpit]\nlisten = \"127.0.0.1:0\"\nchaos = true\n",
    )
    .await;
    let api = mailpit(&srv);
    let r = get(api, "/api/v1/chaos").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        serde_json::json!({
            "Sender": {"ErrorCode": 451, "Probability": 0},
            "Recipient": {"ErrorCode": 451, "Probability": 0},
            "Authentication": {"ErrorCode": 535, "Probability": 0}
        })
    );

    // The sender trigger at 100 %: MAIL FROM gets its code, nothing else changes.
    let r = set_chaos(api, r#"{"Sender": {"ErrorCode": 452, "Probability": 100}}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["Sender"],
        serde_json::json!({"ErrorCode": 452, "Probability": 100})
    );
    let replies = envelope(srv.addr).await;
    assert!(
        replies[1].starts_with("452 Chaos sender error"),
        "{replies:?}"
    );

    // A new PUT resets what it leaves out: now only RCPT fails, with a 5xx.
    let r = set_chaos(
        api,
        r#"{"Recipient": {"ErrorCode": 550, "Probability": 100}}"#,
    )
    .await;
    assert_eq!(r.json()["Sender"]["Probability"], 0, "{}", r.text());
    let replies = envelope(srv.addr).await;
    assert!(replies[1].starts_with("250"), "{replies:?}");
    assert!(
        replies[2].starts_with("550 Chaos recipient error"),
        "{replies:?}"
    );

    // AUTH: the trigger answers before the credentials are looked at.
    set_chaos(
        api,
        r#"{"Authentication": {"ErrorCode": 454, "Probability": 100}}"#,
    )
    .await;
    let mut c = Client::greeted(srv.addr).await;
    c.cmd("EHLO client.test").await;
    let r = c.cmd("AUTH PLAIN AGFsaWNlAHdyb25n").await;
    assert_eq!(r.text(), "454 Chaos authentication error");

    // Out of range: refused, nothing changed.
    let r = set_chaos(api, r#"{"Sender": {"ErrorCode": 250, "Probability": 100}}"#).await;
    assert_eq!(
        (r.status, r.text().trim()),
        (400, "error code must be between 400 and 599")
    );
    let r = set_chaos(api, r#"{"Recipient": {"Probability": 101}}"#).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(
        get(api, "/api/v1/chaos").await.json()["Authentication"]["Probability"],
        100
    );

    // Reset: mail is accepted again.
    let r = set_chaos(api, "{}").await;
    assert_eq!(r.status, 200);
    let reply = send_message(
        srv.addr,
        "a@example.net",
        &["b@example.test"],
        "Subject: calm\r\n\r\nagain\r\n",
    )
    .await;
    assert_eq!(reply.head(), "250 2.0.0", "{}", reply.text());
    assert_eq!(get(api, "/api/v1/webui").await.json()["ChaosEnabled"], true);
}

#[tokio::test]
async fn chaos_is_refused_unless_the_settings_enable_it() {
    let srv = TestServer::start("[mailpit]\nlisten = \"127.0.0.1:0\"\n").await;
    let api = mailpit(&srv);
    for r in [get(api, "/api/v1/chaos").await, set_chaos(api, "{}").await] {
        assert_eq!((r.status, r.text().trim()), (400, "Chaos is not enabled"));
    }
    assert_eq!(
        get(api, "/api/v1/webui").await.json()["ChaosEnabled"],
        false
    );
}

/// The downstream mailbox server: takes mail for example.test only.
async fn downstream() -> TestServer {
    TestServer::start("[smtp]\ndomains = [\"example.test\"]\n").await
}

/// The whole stored message of the newest message in `mailbox` of `srv`.
async fn newest_raw(srv: &TestServer, mailbox: &str) -> Option<String> {
    let store = &srv.running.store;
    let list = store
        .list_mailbox(mailbox, intake_core::Page::FIRST)
        .await
        .unwrap();
    let id = list.messages.first()?.id;
    let m = store.fetch(id).await.unwrap().unwrap();
    Some(String::from_utf8_lossy(&m.raw).into_owned())
}

/// A server relaying to `down` (`[relay]`) with the Mailpit listener: `domains` its
/// smtp.domains, `delivery` its delivery.targets, `mailpit` more `[mailpit]` settings.
async fn gateway(down: &TestServer, domains: &str, targets: &str, mailpit: &str) -> TestServer {
    TestServer::start(&format!(
        "[smtp]\ndomains = {domains}\n[delivery]\ntargets = {targets}\n\
         [relay]\nserver = \"{}\"\n[mailpit]\nlisten = \"127.0.0.1:0\"\n{mailpit}",
        down.addr
    ))
    .await
}

/// Releases the newest message with `body`.
async fn release(api: SocketAddr, body: &str) -> Response {
    call(api, "POST", "/api/v1/message/latest/release", body).await
}

#[tokio::test]
async fn a_caught_message_is_released_to_the_relay_only() {
    let down = downstream().await;
    let store = r#"["store"]"#;
    let srv = gateway(&down, r#"["example.test"]"#, store, "release = true\n").await;
    let api = mailpit(&srv);
    // Caught here (delivery.targets is the store): nothing went downstream.
    let r = send_message(
        srv.addr,
        "bounce@example.net",
        &["dev@example.test"],
        "From: App <app@example.net>\r\nBcc: secret@example.test\r\nMessage-ID: <orig@example.net>\r\n\
         Subject: welcome\r\n\r\nhello\r\n",
    )
    .await;
    assert_eq!(r.head(), "250 2.0.0", "{}", r.text());
    assert_eq!(newest_raw(&down, "carol@example.test").await, None);

    let r = release(api, r#"{"To": ["Carol <carol@example.test>"]}"#).await;
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    let raw = newest_raw(&down, "carol@example.test")
        .await
        .expect("released downstream");
    assert!(raw.contains("Subject: welcome"), "{raw}");
    assert!(!raw.contains("Bcc:"), "Bcc is removed: {raw}");
    assert!(
        !raw.contains("<orig@example.net>"),
        "a new Message-ID: {raw}"
    );
    let m = down
        .running
        .store
        .list_mailbox("carol@example.test", intake_core::Page::FIRST)
        .await
        .unwrap();
    assert_eq!(
        m.messages[0].mail_from, "app@example.net",
        "From: is the sender"
    );

    // The downstream's refusal comes back as Mailpit's error.
    let r = release(api, r#"{"To": ["someone@elsewhere.test"]}"#).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text()
            .starts_with("SMTP error: someone@elsewhere.test: 550"),
        "{}",
        r.text()
    );
    for (body, want) in [
        (r#"{"To": []}"#, "No valid addresses found"),
        (
            r#"{"To": ["not an address"]}"#,
            "Invalid email address: not an address",
        ),
    ] {
        let r = release(api, body).await;
        assert_eq!((r.status, r.text().trim()), (400, want));
    }
    let r = call(
        api,
        "POST",
        "/api/v1/message/0190a7c0-0000-7000-8000-000000000000/release",
        r#"{"To": ["carol@example.test"]}"#,
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(
        get(api, "/api/v1/webui").await.json()["MessageRelay"],
        serde_json::json!({
            "Enabled": true, "SMTPServer": down.addr.to_string(), "ReturnPath": "",
            "AllowedRecipients": "", "BlockedRecipients": "", "OverrideFrom": "",
            "PreserveMessageIDs": false
        })
    );
}

#[tokio::test]
async fn release_is_refused_unless_enabled() {
    let down = downstream().await;
    // A relay is configured, but release is not switched on.
    let srv = gateway(&down, r#"["example.test"]"#, r#"["store"]"#, "").await;
    catch_one(&srv).await;
    let r = release(mailpit(&srv), r#"{"To": ["carol@example.test"]}"#).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("not enabled"), "{}", r.text());
    assert_eq!(newest_raw(&down, "carol@example.test").await, None);
}

#[tokio::test]
async fn send_goes_through_the_delivery_targets_like_smtp_mail() {
    let down = downstream().await;
    let domains = r#"["example.test", "other.test"]"#;
    let srv = gateway(&down, domains, r#"["store", "relay"]"#, "").await;
    let api = mailpit(&srv);
    let r = call(
        api,
        "POST",
        "/api/v1/send",
        r#"{"From": {"Email": "app@example.net"}, "To": [{"Email": "dev@example.test"}],
            "Subject": "injected", "Text": "hello", "Tags": ["api"],
            "Headers": {"Authentication-Results": "mx.test; dkim=pass", "X-Kept": "yes"}}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["ID"].as_str().unwrap().to_string();
    // Stored here (and tagged), and relayed downstream as SMTP mail is.
    let here = get(api, &format!("/api/v1/message/{id}")).await.json();
    assert_eq!(here["Subject"], "injected");
    assert_eq!(here["Tags"], serde_json::json!(["api"]));
    // As from SMTP mail, results claiming to be ours are dropped; other fields stay.
    let headers = get(api, &format!("/api/v1/message/{id}/headers"))
        .await
        .json();
    assert_eq!(
        headers["Authentication-Results"],
        serde_json::Value::Null,
        "{headers}"
    );
    assert_eq!(headers["X-Kept"], serde_json::json!(["yes"]));
    let raw = newest_raw(&down, "dev@example.test")
        .await
        .expect("relayed downstream");
    assert!(raw.contains("Subject: injected"), "{raw}");

    // A recipient the downstream refuses: not delivered, and Mailpit's 400 says why.
    let to = |rcpt: &str| {
        format!(
            r#"{{"From": {{"Email": "app@example.net"}}, "To": [{{"Email": "{rcpt}"}}],
                "Subject": "refused", "Text": "no"}}"#
        )
    };
    let r = call(api, "POST", "/api/v1/send", &to("x@other.test")).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("x@other.test: 550"), "{}", r.text());
    // A domain SMTP would not take is not taken here either: no relay through the API.
    let r = call(api, "POST", "/api/v1/send", &to("x@elsewhere.test")).await;
    assert_eq!(
        (r.status, r.text().trim()),
        (400, "Relay access denied: x@elsewhere.test")
    );
}

/// SpamAssassin's test pattern: a score of 1000.
const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

#[tokio::test]
async fn sa_check_reports_spamds_rules() {
    let spamd = intake_policy::testspamd::Spamd::start();
    let srv = TestServer::start(&format!(
        "[smtp]\ndomains = [\"example.test\"]\n[mailpit]\nlisten = \"127.0.0.1:0\"\n\
         [spamd]\nenabled = true\naddress = \"{}\"\ntimeout = \"60s\"\non_error = \"pass\"\n",
        spamd.addr
    ))
    .await;
    let api = mailpit(&srv);
    let r = send_message(
        srv.addr,
        "a@example.net",
        &["b@example.test"],
        &format!("From: a@example.net\r\nSubject: buy now\r\n\r\n{GTUBE}\r\n"),
    )
    .await;
    assert_eq!(r.head(), "250 2.0.0", "{}", r.text());
    // Until spamd has loaded its rules and listens, the check says so in `Error`.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let result = loop {
        let r = get(api, "/api/v1/message/latest/sa-check").await;
        assert_eq!(r.status, 200, "{}", r.text());
        let j = r.json();
        if j["Error"] == "" {
            break j;
        }
        assert_eq!(j["Rules"], serde_json::Value::Null, "{j}");
        assert!(
            std::time::Instant::now() < deadline,
            "spamd never answered: {j}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(result["IsSpam"], true, "{result}");
    assert!(result["Score"].as_f64().unwrap() >= 1000.0, "{result}");
    let gtube = result["Rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["Name"] == "GTUBE")
        .unwrap_or_else(|| panic!("GTUBE among {result}"));
    assert_eq!(gtube["Score"], 1000.0);
    assert!(
        gtube["Description"]
            .as_str()
            .unwrap()
            .contains("Generic Test"),
        "{gtube}"
    );
    assert_eq!(get(api, "/api/v1/webui").await.json()["SpamAssassin"], true);
}

#[tokio::test]
async fn sa_check_without_spamd_answers_as_mailpit_without_spamassassin() {
    let srv = TestServer::start(
        "[smtp]\ndomains = [\"example.test\"]\n[mailpit]\nlisten = \"127.0.0.1:0\"\n",
    )
    .await;
    catch_one(&srv).await;
    let r = get(mailpit(&srv), "/api/v1/message/latest/sa-check").await;
    assert_eq!(
        (r.status, r.text().trim()),
        (400, "no SpamAssassin service defined")
    );
}

#[tokio::test]
async fn a_reload_keeps_the_triggers_and_follows_mailpit_chaos() {
    let cfg = |on: bool| {
        format!(
            "[smtp]\ndomains = [\"example.test\"]\n[mailpit]\nlisten = \"127.0.0.1:0\"\nchaos = {on}\n"
        )
    };
    let srv = TestServer::start(&cfg(true)).await;
    let api = mailpit(&srv);
    let reload = |on: bool| {
        let s = crate::support::settings(&cfg(on), &srv.data());
        srv.running.reloader.apply(&s).expect("reload applied");
    };
    let r = set_chaos(api, r#"{"Sender": {"ErrorCode": 451, "Probability": 100}}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    reload(true);
    assert!(envelope(srv.addr).await[1].starts_with("451 Chaos sender error"));
    // Switched off: no trigger fires, the API refuses.
    reload(false);
    assert!(envelope(srv.addr).await[1].starts_with("250"));
    assert_eq!(get(api, "/api/v1/chaos").await.status, 400);
    // On again: the triggers set before are still there.
    reload(true);
    assert_eq!(
        get(api, "/api/v1/chaos").await.json()["Sender"],
        serde_json::json!({"ErrorCode": 451, "Probability": 100})
    );
    assert!(envelope(srv.addr).await[1].starts_with("451 Chaos sender error"));
}

/// One client, one rate budget: the server wires the main API and the Mailpit listener to
/// one limiter, so requests to either spend the same burst (issue 19: twice the documented
/// rate otherwise).
#[tokio::test]
async fn the_api_and_the_mailpit_listener_share_one_rate_budget() {
    let srv = TestServer::start(
        "[http]\nrate_limit = 1\nrate_limit_burst = 4\n[mailpit]\nlisten = \"127.0.0.1:0\"\n",
    )
    .await;
    let api = srv.running.http_addr.expect("HTTP is on");
    let mp = mailpit(&srv);
    let mut statuses = Vec::new();
    for addr in [api, mp, api, mp, mp, api] {
        statuses.push(get(addr, "/api/v1/messages").await.status);
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 429, 429],
        "a burst of 4 spent on both listeners together"
    );
}
