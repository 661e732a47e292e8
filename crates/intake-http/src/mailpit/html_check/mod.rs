//! `GET /api/v1/message/{ID}/html-check`: which email clients support the HTML and CSS a
//! message uses, from the caniemail data set, in Mailpit's `HTMLCheckResponse` shape.
//!
//! The data is the npm package `caniemail` (MIT), taken unchanged at the version pinned in
//! `data/caniemail/VERSION` with its licence beside it, and built into the binary
//! (`data/caniemail/update.sh` refreshes it; `update.sh --check` proves it unchanged). What
//! a message uses is found by [`detect`]; every feature found becomes a warning with the
//! data's results per client family, platform and version, and a score: the share of
//! results that are supported, partial (`a`, or unknown) and unsupported. The total weighs
//! each warning by how many of the document's nodes use the feature, the worst partial and
//! unsupported shares counting, as Mailpit computes it.

mod detect;

use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::Json;
use axum::extract::{Path, State};
use intake_core::{StoredMessage, mime};
use serde::{Deserialize, Serialize};

use super::resolve;
use crate::AppState;
use crate::error::ApiError;
use crate::lookup::load;

/// The caniemail data, as published.
const DATA: &str = include_str!("../../../data/caniemail/caniemail.json");

#[derive(Debug, Deserialize)]
struct CanIEmail {
    nicenames: NiceNames,
    data: Vec<Feature>,
}

#[derive(Debug, Deserialize)]
struct NiceNames {
    family: BTreeMap<String, String>,
    platform: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct Feature {
    slug: String,
    title: String,
    #[serde(default)]
    description: Option<String>,
    url: String,
    category: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    keywords: Option<String>,
    /// family -> platform -> version -> support (`y`, `n`, `a #1`, `u`).
    stats: BTreeMap<String, BTreeMap<String, BTreeMap<String, String>>>,
    #[serde(default)]
    notes_by_num: Option<BTreeMap<String, String>>,
}

static CANIEMAIL: LazyLock<CanIEmail> =
    LazyLock::new(|| serde_json::from_str(DATA).expect("the caniemail data parses"));

/// Mailpit's `HTMLCheckResponse`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
#[schema(as = HTMLCheckResponse)]
pub struct Report {
    /// The features found, worst first.
    pub warnings: Vec<Warning>,
    /// Every platform in the data and its client families (for the web UI).
    pub platforms: BTreeMap<String, Vec<String>>,
    /// The weighted total.
    pub total: Total,
}

/// One feature the message uses.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
#[schema(as = HTMLCheckWarning)]
pub struct Warning {
    /// caniemail's identifier (`css-display-flex`).
    pub slug: String,
    /// Its title.
    pub title: String,
    /// Its description, HTML.
    pub description: String,
    /// Its page on caniemail.com.
    #[serde(rename = "URL")]
    pub url: String,
    /// `html`, `css` or `image`.
    pub category: String,
    /// caniemail's tags.
    pub tags: Vec<String>,
    /// caniemail's keywords.
    pub keywords: String,
    /// One result per client family, platform and version.
    pub results: Vec<ClientResult>,
    /// The notes the results refer to, HTML.
    pub notes_by_number: BTreeMap<String, String>,
    /// How many times the message uses it, and the shares of support.
    pub score: Score,
}

/// The support of one client version.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
#[schema(as = HTMLCheckResult)]
pub struct ClientResult {
    /// `Gmail Android (2019-10)`.
    pub name: String,
    /// `android`.
    pub platform: String,
    /// `gmail`.
    pub family: String,
    /// `2019-10`.
    pub version: String,
    /// `yes`, `no` or `partial`.
    pub support: String,
    /// The note that explains a partial support, if any.
    pub note_number: String,
}

/// A warning's score.
#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
#[schema(as = HTMLCheckScore)]
pub struct Score {
    /// Uses in the message.
    pub found: usize,
    /// Percent of results supported.
    pub supported: f32,
    /// Percent partially supported.
    pub partial: f32,
    /// Percent unsupported.
    pub unsupported: f32,
}

/// The weighted total.
#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
#[schema(as = HTMLCheckTotal)]
pub struct Total {
    /// Features tested.
    pub tests: usize,
    /// HTML elements in the message.
    pub nodes: usize,
    /// Percent supported overall.
    pub supported: f32,
    /// Percent partially supported overall.
    pub partial: f32,
    /// Percent unsupported overall.
    pub unsupported: f32,
}

pub(super) async fn html_check(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Report>, ApiError> {
    let id = resolve(&state, &id).await?;
    let m = load(&state, &id).await?;
    Ok(Json(report(&state, &m).await?))
}

/// The check of a stored message (this route and the web inbox's): `400` when the check is
/// off or the message has no HTML.
pub(crate) async fn report(state: &AppState, m: &StoredMessage) -> Result<Report, ApiError> {
    if !state.config.html_check {
        return Err(ApiError::BadRequest(
            "the HTML check is off (mailpit.html_check = false)".into(),
        ));
    }
    let raw = m.raw.clone();
    let report = tokio::task::spawn_blocking(move || mime::html_body(&raw).map(|h| check(&h)))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    // Mailpit's answer for a message without HTML.
    report.ok_or_else(|| ApiError::BadRequest("message does not contain HTML".into()))
}

/// The check of one HTML document.
pub fn check(html: &str) -> Report {
    let data = &*CANIEMAIL;
    let found = detect::Found::of(html);
    let mut warnings = Vec::new();
    let mut tests = 0;
    if found.scripts > 0 {
        warnings.push(script_warning(found.scripts));
    }
    tests += 1;
    for f in &data.data {
        let Some(count) = found.count(&f.slug, &f.category) else {
            continue;
        };
        tests += 1;
        if count > 0 {
            warnings.push(warning(data, f, count));
        }
    }
    let nodes = found.nodes.max(1) as f32;
    let weighted = |w: &Warning, share: f32| share * w.score.found as f32 / nodes;
    let worst = |share: fn(&Score) -> f32| {
        warnings
            .iter()
            .map(|w| weighted(w, share(&w.score)))
            .fold(0.0f32, f32::max)
            .min(100.0)
    };
    let partial = worst(|s| s.partial);
    let unsupported = worst(|s| s.unsupported).min(100.0 - partial);
    warnings.sort_by(|a, b| {
        let key = |w: &Warning| weighted(w, w.score.partial + w.score.unsupported);
        key(b).total_cmp(&key(a))
    });
    Report {
        warnings,
        platforms: platforms(data),
        total: Total {
            tests,
            nodes: found.nodes,
            supported: 100.0 - partial - unsupported,
            partial,
            unsupported,
        },
    }
}

/// `<script>` is in no client, and not in caniemail's data: Mailpit's own warning.
fn script_warning(found: usize) -> Warning {
    Warning {
        slug: "html-script".into(),
        title: "<script> element".into(),
        description: "JavaScript is not supported in any email client.".into(),
        url: String::new(),
        category: "html".into(),
        tags: Vec::new(),
        keywords: String::new(),
        results: Vec::new(),
        notes_by_number: BTreeMap::new(),
        score: Score {
            found,
            supported: 0.0,
            partial: 0.0,
            unsupported: 100.0,
        },
    }
}

fn warning(data: &CanIEmail, f: &Feature, found: usize) -> Warning {
    let mut results = Vec::new();
    let (mut yes, mut no, mut partial) = (0u32, 0u32, 0u32);
    for (family, platforms) in &f.stats {
        for (platform, versions) in platforms {
            for (version, support) in versions {
                let (word, note) = match support.as_str() {
                    "y" => {
                        yes += 1;
                        ("yes", String::new())
                    }
                    "n" => {
                        no += 1;
                        ("no", String::new())
                    }
                    other => {
                        partial += 1;
                        let note = other
                            .rsplit_once('#')
                            .map(|(_, n)| n.trim().to_string())
                            .unwrap_or_default();
                        ("partial", note)
                    }
                };
                let nice = |names: &BTreeMap<String, String>, k: &str| {
                    names.get(k).cloned().unwrap_or_else(|| k.to_string())
                };
                results.push(ClientResult {
                    name: format!(
                        "{} {} ({version})",
                        nice(&data.nicenames.family, family),
                        nice(&data.nicenames.platform, platform)
                    ),
                    platform: platform.clone(),
                    family: family.clone(),
                    version: version.clone(),
                    support: word.into(),
                    note_number: note,
                });
            }
        }
    }
    let all = (yes + no + partial).max(1) as f32;
    Warning {
        slug: f.slug.clone(),
        title: f.title.clone(),
        description: markdown(f.description.as_deref().unwrap_or("")),
        url: f.url.clone(),
        category: f.category.clone(),
        tags: f.tags.clone(),
        keywords: f.keywords.clone().unwrap_or_default(),
        results,
        notes_by_number: f
            .notes_by_num
            .iter()
            .flatten()
            .map(|(n, text)| (n.clone(), markdown(text)))
            .collect(),
        score: Score {
            found,
            supported: yes as f32 / all * 100.0,
            partial: partial as f32 / all * 100.0,
            unsupported: no as f32 / all * 100.0,
        },
    }
}

/// caniemail's Markdown as HTML, without the paragraph around a single line.
fn markdown(text: &str) -> String {
    let mut out = String::new();
    pulldown_cmark::html::push_html(&mut out, pulldown_cmark::Parser::new(text));
    let out = out.trim();
    match out.strip_prefix("<p>").and_then(|o| o.strip_suffix("</p>")) {
        Some(inner) if !inner.contains("<p>") => inner.to_string(),
        _ => out.to_string(),
    }
}

/// Every platform and the client families the data has for it, sorted.
fn platforms(data: &CanIEmail) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for f in &data.data {
        for (family, platforms) in &f.stats {
            let nice = data.nicenames.family.get(family).unwrap_or(family);
            for platform in platforms.keys() {
                let list = out.entry(platform.clone()).or_default();
                if !list.contains(nice) {
                    list.push(nice.clone());
                }
            }
        }
    }
    for list in out.values_mut() {
        list.sort();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slugs(r: &Report) -> Vec<&str> {
        r.warnings.iter().map(|w| w.slug.as_str()).collect()
    }

    #[test]
    fn the_data_is_the_published_package() {
        assert!(CANIEMAIL.data.len() > 300, "{}", CANIEMAIL.data.len());
        assert_eq!(
            CANIEMAIL.nicenames.family.get("gmail").map(String::as_str),
            Some("Gmail")
        );
    }

    #[test]
    fn features_in_use_become_warnings_with_the_data_s_results() {
        let html = r#"<!DOCTYPE html><html><head><style>
            @media (max-width: 600px) { .a { display: flex; } }
            a:hover { color: red }</style></head>
            <body><div style="display: flex; border-radius: 4px">x</div>
            <form><input type="checkbox"></form><img src="https://x.test/a.webp">
            <script>alert(1)</script></body></html>"#;
        let r = check(html);
        let s = slugs(&r);
        for want in [
            "html-script",
            "html-form",
            "html-input-checkbox",
            "html-div",
            "image-webp",
            "css-display-flex",
            "css-border-radius",
            "css-at-media",
            "css-pseudo-class-hover",
        ] {
            assert!(s.contains(&want), "{want} missing from {s:?}");
        }
        assert!(!s.contains(&"html-video") && !s.contains(&"css-z-index"));
        let flex = r
            .warnings
            .iter()
            .find(|w| w.slug == "css-display-flex")
            .unwrap();
        assert_eq!(flex.score.found, 2, "inline once and in <style> once");
        assert!(
            flex.results
                .iter()
                .any(|c| c.family == "outlook" && c.support == "no")
        );
        assert!(flex.notes_by_number.contains_key("1"));
        let sum = flex.score.supported + flex.score.partial + flex.score.unsupported;
        assert!((sum - 100.0).abs() < 0.01);
        let script = &r.warnings[0];
        assert_eq!(script.slug, "html-script", "the worst comes first");
        let t = &r.total;
        // body, style, div, form, input, img, script
        assert_eq!(t.nodes, 7, "{t:?}");
        assert!(t.tests > 250, "{t:?}");
        assert!((t.supported + t.partial + t.unsupported - 100.0).abs() < 0.01);
        assert!(t.unsupported > 0.0);
        assert!(r.platforms["android"].contains(&"Gmail".to_string()));
    }

    #[test]
    fn markdown_becomes_html() {
        assert_eq!(
            markdown("`display:inline-flex` is not supported."),
            "<code>display:inline-flex</code> is not supported."
        );
    }
}
