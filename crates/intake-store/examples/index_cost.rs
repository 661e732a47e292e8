//! Instruction counts of search indexing, for `valgrind --tool=callgrind` (repeatable on a
//! loaded machine). Not a benchmark by itself: run it under callgrind and read the inclusive
//! cost of `index_cost::work` (see docs/performance.md, "Search indexing").
//!
//!     index_cost parse-meta|index-old|index-new|index-headers N
//!     index_cost fts N CHUNK [detail=full|column] [pgsz=BYTES] [automerge=N] [columns=4|1] [tokenize=SPEC]
//!
//! The message is what bench/core.sh sends (smtp-source -l 4096) with our Received: first.

use std::time::Instant;

use intake_core::mime;
use rusqlite::{Connection, params};

fn message(i: usize) -> Vec<u8> {
    let mut m = format!(
        "Received: from client.example.test (localhost [127.0.0.1])\r\n\tby mx.example.test (Intake) with ESMTP id {i:08x}\r\n\tfor <bench@example.test>; Sun, 6 Dec 2026 01:44:36 +0000\r\n\
         From: <sender@example.test>\r\nTo: <bench@example.test>\r\nDate: Sun,  6 Dec 2026 01:44:36 +0000 (UTC)\r\n\
         Message-Id: <{i:04x}.0003.0000@client.example.test>\r\nSubject: intake core bench\r\n\r\n"
    )
    .into_bytes();
    let mut n = 0;
    let mut line = 1;
    while n < 4096 {
        let l = format!("{line}{}\r\n", "X".repeat(78 - line.to_string().len()));
        n += l.len();
        m.extend_from_slice(l.as_bytes());
        line += 1;
    }
    m
}

/// mime::index_text as it was before (commit aa84c1a): a full parse with every field.
fn index_text_old(raw: &[u8]) -> (String, String) {
    let Some(msg) = mail_parser::MessageParser::default().parse(raw) else {
        return (String::from_utf8_lossy(raw).into_owned(), String::new());
    };
    let body = msg.body_text(0).map(|t| t.into_owned()).unwrap_or_default();
    let headers = msg
        .headers()
        .iter()
        .filter_map(|h| match h.value() {
            mail_parser::HeaderValue::Text(t) => Some(t.to_string()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n");
    (body, headers)
}

#[inline(never)]
fn work(args: &[String], msgs: &[Vec<u8>]) -> usize {
    let mut sink = 0;
    match args[1].as_str() {
        "parse-meta" => msgs
            .iter()
            .for_each(|m| sink += mime::parse_meta(m).subject.map_or(0, |s| s.len())),
        "index-old" => msgs.iter().for_each(|m| sink += index_text_old(m).0.len()),
        "index-new" => msgs
            .iter()
            .for_each(|m| sink += mime::index_text(m).0.len()),
        "index-headers" => msgs
            .iter()
            .for_each(|m| sink += mime::index_headers(m).len()),
        _ => unreachable!(),
    }
    sink
}

#[inline(never)]
fn fts_work(conn: &mut Connection, docs: &[(String, String)], chunk: usize, columns: usize) {
    for (c, part) in docs.chunks(chunk).enumerate() {
        let tx = conn.transaction().unwrap();
        {
            let mut ins = if columns == 4 {
                tx.prepare_cached("INSERT INTO search_index (rowid, subject, addresses, body, headers) VALUES (?1, ?2, ?3, ?4, ?5)")
            } else {
                tx.prepare_cached("INSERT INTO search_index (rowid, text) VALUES (?1, ?2 || ' ' || ?3 || ' ' || ?4 || ' ' || ?5)")
            }
            .unwrap();
            for (i, (body, headers)) in part.iter().enumerate() {
                let seq = (c * chunk + i + 1) as i64;
                ins.execute(params![
                    seq,
                    "intake core bench",
                    "sender@example.test [\"bench@example.test\"] <sender@example.test> <bench@example.test>",
                    body,
                    headers
                ])
                .unwrap();
            }
        }
        tx.commit().unwrap();
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args[2].parse().unwrap();
    let msgs: Vec<Vec<u8>> = (0..n).map(message).collect();
    let t = Instant::now();
    if args[1] != "fts" {
        let s = work(&args, &msgs);
        eprintln!("{} x{n}: {:?} ({s})", args[1], t.elapsed());
        return;
    }
    let chunk: usize = args[3].parse().unwrap();
    let opt = |k: &str, d: &str| -> String {
        args.iter()
            .find_map(|a| a.strip_prefix(&format!("{k}=")).map(str::to_string))
            .unwrap_or_else(|| d.to_string())
    };
    let columns: usize = opt("columns", "4").parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut conn = Connection::open(dir.path().join("t.db")).unwrap();
    conn.pragma_update(None, "page_size", 16384).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
    conn.pragma_update(None, "cache_size", -3000).unwrap();
    let cols = if columns == 4 {
        "subject, addresses, body, headers"
    } else {
        "text"
    };
    conn.execute_batch(&format!(
        "CREATE VIRTUAL TABLE search_index USING fts5({cols}, content = '', contentless_delete = 1,
           detail = {}, tokenize = '{}');",
        opt("detail", "full"),
        opt("tokenize", "unicode61 remove_diacritics 2")
    ))
    .unwrap();
    if let Some(p) = args.iter().find_map(|a| a.strip_prefix("pgsz=")) {
        conn.execute(
            "INSERT INTO search_index (search_index, rank) VALUES ('pgsz', ?1)",
            [p.parse::<i64>().unwrap()],
        )
        .unwrap();
    }
    if let Some(p) = args.iter().find_map(|a| a.strip_prefix("automerge=")) {
        conn.execute(
            "INSERT INTO search_index (search_index, rank) VALUES ('automerge', ?1)",
            [p.parse::<i64>().unwrap()],
        )
        .unwrap();
    }
    let docs: Vec<(String, String)> = msgs
        .iter()
        .map(|m| {
            let (body, headers) = mime::index_text(m);
            (body.into_owned(), headers)
        })
        .collect();
    let t = Instant::now();
    fts_work(&mut conn, &docs, chunk, columns);
    let size: i64 = conn
        .query_row(
            "SELECT sum(length(block)) FROM search_index_data",
            [],
            |r| r.get(0),
        )
        .unwrap();
    eprintln!(
        "fts x{n} chunk {chunk}: {:?}, index data {size} bytes",
        t.elapsed()
    );
}
