//! The service extensions Intake advertises in its EHLO reply (RFC 5321 §4.1.1.1).

use crate::reply::Reply;

/// Which optional extensions to advertise. The always-on ones (PIPELINING, SIZE, 8BITMIME,
/// SMTPUTF8, ENHANCEDSTATUSCODES, CHUNKING) are written unconditionally.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extensions {
    /// Offer STARTTLS (RFC 3207).
    pub starttls: bool,
    /// Offer AUTH PLAIN LOGIN (RFC 4954).
    pub auth: bool,
}

/// Builds the multi-line EHLO reply: `250-<host> greets <client>` then one keyword per line.
pub fn ehlo_reply(hostname: &str, client: &str, max_size: u64, ext: Extensions) -> Reply {
    let mut text = String::with_capacity(160);
    text.push_str(hostname);
    if client.is_empty() {
        text.push_str(" Hello");
    } else {
        text.push_str(" Hello ");
        text.push_str(client);
    }
    text.push_str("\nPIPELINING\nSIZE ");
    text.push_str(&max_size.to_string());
    text.push_str("\n8BITMIME\nSMTPUTF8\nENHANCEDSTATUSCODES\nCHUNKING");
    if ext.auth {
        text.push_str("\nAUTH PLAIN LOGIN");
    }
    if ext.starttls {
        text.push_str("\nSTARTTLS");
    }
    Reply::plain(250, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_every_extension() {
        let r = ehlo_reply("mx.test", "client.example", 1000, Extensions::default());
        assert_eq!(
            r.to_wire(),
            "250-mx.test Hello client.example\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n\
             250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n250 CHUNKING\r\n"
        );
    }
}
