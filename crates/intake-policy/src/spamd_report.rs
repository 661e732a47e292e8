//! spamd's `REPORT`: its verdict on one message with every rule that hit, each with its
//! points and description (what Mailpit's `sa-check` shows). Asked on demand (the Mailpit
//! API), not at end of data: the check itself uses `SYMBOLS` ([`crate::spamd`]).

use crate::spamd::{SpamdConfig, exchange, parse_answer};

/// One rule that hit.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportRule {
    /// Its points (negative for a rule that speaks for the message).
    pub points: f64,
    /// Its name (`MISSING_DATE`).
    pub name: String,
    /// spamd's description, continuation lines joined.
    pub description: String,
}

/// spamd's report.
#[derive(Debug, Clone, PartialEq)]
pub struct SpamdReport {
    /// spamd's verdict.
    pub spam: bool,
    /// The score.
    pub score: f64,
    /// spamd's threshold.
    pub threshold: f64,
    /// The rules that hit, in spamd's order.
    pub rules: Vec<ReportRule>,
}

/// Asks spamd (at `cfg.address`, within `cfg.timeout`) for its report on `content`.
pub async fn report(cfg: &SpamdConfig, content: &[u8]) -> Result<SpamdReport, String> {
    if content.len() > cfg.max_size {
        return Err(format!(
            "the message is larger than spamd.max_size ({} bytes)",
            cfg.max_size
        ));
    }
    let answer = tokio::time::timeout(cfg.timeout, exchange(cfg.address, "REPORT", content))
        .await
        .map_err(|_| format!("spamd {}: no answer within {:?}", cfg.address, cfg.timeout))?
        .map_err(|e| format!("spamd {}: {e}", cfg.address))?;
    parse_report(&answer).map_err(|e| format!("spamd {}: {e}", cfg.address))
}

/// Parses an answer to `REPORT`: the `Spam:` header line, then the rules table after
/// `Content analysis details:` (`pts rule name description`, descriptions continued on
/// lines that start with spaces).
pub fn parse_report(answer: &[u8]) -> Result<SpamdReport, String> {
    let head = parse_answer(answer)?;
    let text = String::from_utf8_lossy(answer);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let mut rules: Vec<ReportRule> = Vec::new();
    let mut in_table = false;
    for line in body.lines() {
        if !in_table {
            in_table = line.starts_with("Content analysis details");
            continue;
        }
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with("pts ") || trimmed.starts_with("----") {
            continue;
        }
        let mut words = trimmed.splitn(3, char::is_whitespace);
        let first = words.next().unwrap_or("");
        match first.parse::<f64>() {
            Ok(points) => {
                let name = words.next().unwrap_or("").to_string();
                let description = words.next().unwrap_or("").trim().to_string();
                rules.push(ReportRule {
                    points,
                    name,
                    description,
                });
            }
            // A description continued on its own line.
            Err(_) => {
                if let Some(last) = rules.last_mut() {
                    if !last.description.is_empty() {
                        last.description.push(' ');
                    }
                    last.description.push_str(trimmed);
                }
            }
        }
    }
    Ok(SpamdReport {
        spam: head.spam,
        score: head.score.into(),
        threshold: head.threshold.into(),
        rules,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules_table_is_read_with_continued_descriptions() {
        let answer = "SPAMD/1.1 0 EX_OK\r\nContent-length: 9\r\nSpam: True ; 6.3 / 5.0\r\n\r\n\
Spam detection software, running on the system \"h\",\n\
has identified this incoming email as possible spam.\n\n\
Content analysis details:   (6.3 points, 5.0 required)\n\n \
pts rule name              description\n\
---- ---------------------- --------------------------------------------------\n \
1.4 MISSING_DATE           Missing Date: header\n\
-0.0 NO_RELAYS              Informational: message was not relayed via\n                            \
SMTP\n \
4.9 GTUBE                  BODY: Generic Test for Unsolicited Bulk Email\n\n";
        let r = parse_report(answer.as_bytes()).unwrap();
        assert!(r.spam);
        assert_eq!((r.score, r.threshold), (6.3f32 as f64, 5.0));
        let names: Vec<_> = r.rules.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(names, ["MISSING_DATE", "NO_RELAYS", "GTUBE"]);
        assert_eq!(
            r.rules[1].description,
            "Informational: message was not relayed via SMTP"
        );
        assert_eq!(r.rules[0].points, 1.4);
        assert!(parse_report(b"SPAMD/1.1 76 Bad header line").is_err());
    }
}
