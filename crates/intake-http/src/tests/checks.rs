//! The Mailpit listener's message checks as a client sees them: thumbnails of attachments,
//! the link check (real requests to servers on loopback, and the proof that refused links
//! reached no server) and the HTML check.

use std::sync::{Arc, Mutex};

use intake_core::MailStore;
use intake_store::conformance::incoming_with;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{call, request, send};
use crate::{AppState, HttpConfig, LinkCheck};

async fn app_with(config: HttpConfig, content: &str) -> axum::Router {
    let store = intake_store::memory::store();
    store
        .deliver(incoming_with(&["bob@x.test"], content))
        .await
        .unwrap();
    let events = store.events().clone();
    crate::mailpit_router(AppState::new(store, events, b"secret".to_vec(), config))
}

fn link_check(allow: &[&str]) -> HttpConfig {
    HttpConfig {
        link_check: LinkCheck {
            enabled: true,
            allow: allow.iter().map(|n| n.parse().unwrap()).collect(),
        },
        ..HttpConfig::default()
    }
}

/// A listener that nobody accepts on: any connection made to it stays in its backlog.
fn untouched(ip: &str) -> (std::net::TcpListener, u16) {
    let l = std::net::TcpListener::bind((ip, 0)).unwrap();
    l.set_nonblocking(true).unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

/// Whether a connection ever reached `l`.
fn was_reached(l: &std::net::TcpListener) -> bool {
    match l.accept() {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(e) => panic!("{e}"),
    }
}

/// An HTTP server on 127.0.0.1: `/ok` 200, `/gone` 404, `/to-ok` a redirect to `/ok`,
/// `/away` a redirect to `away`. Returns its port and the request lines it saw.
async fn web(away: String) -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let head = String::from_utf8_lossy(&buf);
            let line = head.lines().next().unwrap_or("").to_string();
            log.lock().unwrap().push(line.clone());
            let path = line.split(' ').nth(1).unwrap_or("");
            let answer = match path {
                "/ok" => "200 OK\r\n".to_string(),
                "/to-ok" => "302 Found\r\nLocation: /ok\r\n".into(),
                "/away" => format!("302 Found\r\nLocation: {away}\r\n"),
                _ => "404 Not Found\r\n".into(),
            };
            let _ = s
                .write_all(
                    format!("HTTP/1.1 {answer}Content-Length: 0\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await;
        }
    });
    (port, seen)
}

fn statuses(v: &serde_json::Value) -> Vec<(String, u64, String)> {
    v["Links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["URL"].as_str().unwrap().to_string(),
                l["StatusCode"].as_u64().unwrap(),
                l["Status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_link_check_is_off_unless_the_operator_turns_it_on() {
    let app = app_with(
        HttpConfig::default(),
        "Subject: l\r\n\r\nhttp://127.0.0.1:1/\r\n",
    )
    .await;
    let (status, _, body) = send(
        &app,
        request(
            "GET",
            "/api/v1/message/latest/link-check",
            &[],
            Default::default(),
        ),
    )
    .await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("mailpit.link_check"));
}

#[tokio::test]
async fn links_to_loopback_are_refused_without_a_request_by_default() {
    let (listener, port) = untouched("127.0.0.1");
    let app = app_with(
        link_check(&[]),
        &format!(
            "Subject: l\r\nContent-Type: text/html\r\n\r\n<a href=\"http://127.0.0.1:{port}/x\">a</a>\
             <img src=\"http://localhost:{port}/i.png\"> <a href=\"http://[::ffff:127.0.0.1]:{port}/\">b</a>\r\n"
        ),
    )
    .await;
    let (status, v) = call(&app, "GET", "/api/v1/message/latest/link-check").await;
    assert_eq!(status, 200, "{v}");
    let blocked = "Blocked private/reserved address".to_string();
    assert_eq!(
        statuses(&v),
        [
            (format!("http://127.0.0.1:{port}/x"), 451, blocked.clone()),
            (
                format!("http://[::ffff:127.0.0.1]:{port}/"),
                451,
                blocked.clone()
            ),
            (format!("http://localhost:{port}/i.png"), 451, blocked),
        ]
    );
    assert_eq!(v["Errors"], 3);
    assert!(!was_reached(&listener), "a refused link made no connection");
}

#[tokio::test]
async fn allowed_networks_are_checked_and_every_redirect_hop_is_vetted() {
    // 127.0.0.2 is loopback too, but not in the allowed 127.0.0.1/32.
    let (elsewhere, other) = untouched("127.0.0.2");
    let (port, seen) = web(format!("http://127.0.0.2:{other}/secret")).await;
    let base = format!("http://127.0.0.1:{port}");
    let app = app_with(
        link_check(&["127.0.0.1/32"]),
        &format!("Subject: l\r\n\r\n{base}/ok {base}/gone {base}/to-ok {base}/away\r\n"),
    )
    .await;
    let (status, v) = call(&app, "GET", "/api/v1/message/latest/link-check").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        statuses(&v),
        [
            (format!("{base}/ok"), 200, "OK".into()),
            (format!("{base}/gone"), 404, "Not Found".into()),
            (format!("{base}/to-ok"), 302, "Found".into()),
            (format!("{base}/away"), 302, "Found".into()),
        ],
        "without follow, a redirect is the answer"
    );
    assert_eq!(v["Errors"], 1);
    assert!(
        seen.lock().unwrap().iter().all(|l| l.starts_with("HEAD ")),
        "HEAD only: no body asked for"
    );
    let (status, v) = call(&app, "GET", "/api/v1/message/latest/link-check?follow=true").await;
    assert_eq!(status, 200, "{v}");
    let s = statuses(&v);
    assert_eq!(s[2], (format!("{base}/to-ok"), 200, "OK".into()));
    assert_eq!(
        s[3],
        (
            format!("{base}/away"),
            451,
            "Blocked private/reserved address".into()
        ),
        "the hop to a non-allowed address is refused"
    );
    assert_eq!(v["Errors"], 2);
    assert!(
        !was_reached(&elsewhere),
        "the redirect target saw no request"
    );
}

/// A message with a PNG attachment (part 2) and a PDF (part 3).
fn with_attachments(png: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(png);
    format!(
        "Subject: pics\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
         --b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n\
         --b\r\nContent-Type: image/png\r\nContent-Disposition: attachment; filename=\"red.png\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{b64}\r\n\
         --b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"a.pdf\"\r\n\r\n%PDF-1.4\r\n\
         --b--\r\n"
    )
}

#[tokio::test]
async fn thumbnails_of_attachments_are_180x120_jpegs() {
    let red = image::RgbaImage::from_pixel(300, 200, image::Rgba([255, 0, 0, 255]));
    let mut png = std::io::Cursor::new(Vec::new());
    red.write_to(&mut png, image::ImageFormat::Png).unwrap();
    let app = app_with(HttpConfig::default(), &with_attachments(png.get_ref())).await;
    let get = |part: &str| {
        request(
            "GET",
            &format!("/api/v1/message/latest/part/{part}/thumb"),
            &[],
            Default::default(),
        )
    };
    for (part, colour) in [("2", [255, 0, 0]), ("3", [255, 255, 255])] {
        let (status, ctype, body) = send(&app, get(part)).await;
        assert_eq!((status, ctype.as_str()), (200, "image/jpeg"), "part {part}");
        let img = image::load_from_memory(&body).unwrap().into_rgb8();
        assert_eq!(img.dimensions(), (180, 120));
        let p = img.get_pixel(90, 60).0;
        assert!(
            p.iter().zip(colour).all(|(a, b)| a.abs_diff(b) < 24),
            "part {part}: {p:?}"
        );
    }
    let (status, _, _) = send(&app, get("9")).await;
    assert_eq!(status, 400, "no such part, as Mailpit answers");
}

#[tokio::test]
async fn the_html_check_reports_what_clients_support() {
    let html = "Subject: h\r\nContent-Type: text/html\r\n\r\n<html><body>\
                <div style=\"display:flex\"><video src=\"v.mp4\"></video></div></body></html>\r\n";
    let app = app_with(HttpConfig::default(), html).await;
    let (status, v) = call(&app, "GET", "/api/v1/message/latest/html-check").await;
    assert_eq!(status, 200, "{v}");
    let slugs: Vec<&str> = v["Warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["Slug"].as_str().unwrap())
        .collect();
    assert!(slugs.contains(&"css-display-flex") && slugs.contains(&"html-video"));
    let video = &v["Warnings"][slugs.iter().position(|s| *s == "html-video").unwrap()];
    assert_eq!(video["Category"], "html");
    assert_eq!(video["Score"]["Found"], 1);
    assert!(video["Results"][0]["Family"].is_string());
    assert!(v["Total"]["Nodes"].as_u64().unwrap() >= 3);
    assert!(v["Platforms"]["ios"].is_array());

    let text = app_with(HttpConfig::default(), "Subject: t\r\n\r\nplain\r\n").await;
    let (status, _, body) = send(
        &text,
        request(
            "GET",
            "/api/v1/message/latest/html-check",
            &[],
            Default::default(),
        ),
    )
    .await;
    assert_eq!(
        (status, String::from_utf8_lossy(&body).trim()),
        (400, "message does not contain HTML")
    );
}
