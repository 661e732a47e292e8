//! Tags a delivery gets on its way in, as Mailpit's options allow: the names listed in an
//! `X-Tags` header (comma-separated), and the `+tag` of plus-addressed recipients
//! (`user+tag@example.com`, from the envelope and the `To`/`Cc` headers).

use intake_core::{Incoming, clean_tags, mime};

/// Which sources of tags apply to deliveries. Both off by default (the layer then never
/// tags); the Mailpit listener's settings turn them on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryTags {
    /// Tags from an `X-Tags` header.
    pub header: bool,
    /// Tags from plus-addressed recipients.
    pub plus_addresses: bool,
}

impl DeliveryTags {
    /// The tags `msg` gets (cleaned, distinct, sorted; empty when none apply).
    pub fn tags_for(&self, msg: &Incoming) -> Vec<String> {
        let mut tags: Vec<String> = Vec::new();
        if self.header {
            for (name, value) in mime::headers(&msg.raw) {
                if name.eq_ignore_ascii_case("x-tags") {
                    tags.extend(value.split(',').map(str::to_string));
                }
            }
        }
        if self.plus_addresses {
            let headers = [msg.meta.to.as_deref(), msg.meta.cc.as_deref()];
            let words = headers
                .into_iter()
                .flatten()
                .flat_map(|h| h.split([',', ' ', '<', '>', '"', '\t']));
            for addr in msg.envelope.rcpt_to.iter().map(String::as_str).chain(words) {
                if let Some(tag) = plus_tag(addr) {
                    tags.push(tag.to_string());
                }
            }
        }
        if tags.is_empty() {
            return tags;
        }
        clean_tags(&tags)
    }
}

/// The `tag` of `user+tag@domain`.
fn plus_tag(address: &str) -> Option<&str> {
    let (local, _domain) = address.trim().rsplit_once('@')?;
    let (_, tag) = local.split_once('+')?;
    (!tag.is_empty()).then_some(tag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::incoming_with;

    #[test]
    fn tags_come_from_the_header_and_plus_addresses_only_when_asked() {
        let msg = incoming_with(
            &["dev+Build-42@x.test", "plain@x.test"],
            "To: \"Q\" <qa+nightly@x.test>\r\nX-Tags: alpha, beta!, ,Alpha\r\nSubject: s\r\n\r\nb\r\n",
        );
        assert!(DeliveryTags::default().tags_for(&msg).is_empty());
        let header = DeliveryTags {
            header: true,
            plus_addresses: false,
        };
        assert_eq!(header.tags_for(&msg), vec!["alpha", "beta"]);
        let both = DeliveryTags {
            header: true,
            plus_addresses: true,
        };
        assert_eq!(
            both.tags_for(&msg),
            vec!["Build-42", "alpha", "beta", "nightly"]
        );
    }
}
