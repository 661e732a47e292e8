//! What HTML and CSS a message uses, per caniemail feature (its slug). The document is
//! parsed as a browser would (html5ever, through scraper); CSS is read from `style`
//! attributes and `<style>` elements: declarations (`property: value`), at-rules and
//! selectors. Most slugs name what they test (`html-form`: a `<form>` element or a `form`
//! attribute; `css-border-radius`: that property; `image-webp`: an image whose path ends in
//! `.webp`); the others are spelled out below. A slug with no rule is not tested.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use regex::Regex;
use scraper::{Html, Node, Selector};

/// What one document uses.
pub struct Found {
    /// Elements in the document (`html`, `head` and `meta` not counted; without a `<body>`
    /// in the source, only what the body holds and scripts).
    pub nodes: usize,
    /// `<script>` elements that are code (not JSON data).
    pub scripts: usize,
    doc: Html,
    source: String,
    /// Comment-free text of the `<style>` elements.
    sheets: String,
    /// `(property, value)`, lower-cased, from style attributes and style sheets.
    decls: Vec<(String, String)>,
    /// The selectors of the style sheets' rules, one per comma-separated item, and how
    /// many lists had more than one.
    selectors: Vec<String>,
    grouped: usize,
    comments: usize,
    images: Vec<String>,
}

/// The regex for `pattern`, compiled once per process: every HTML check asks for the same
/// few hundred patterns (one or more per caniemail slug), and compiling costs far more than
/// matching.
fn re(pattern: &str) -> Regex {
    static COMPILED: LazyLock<Mutex<HashMap<String, Regex>>> = LazyLock::new(Default::default);
    let mut compiled = COMPILED.lock().expect("regex cache");
    if let Some(r) = compiled.get(pattern) {
        return r.clone();
    }
    let r = Regex::new(pattern).expect("a valid regex");
    compiled.insert(pattern.to_string(), r.clone());
    r
}

impl Found {
    /// Reads `html`.
    pub fn of(html: &str) -> Found {
        let doc = Html::parse_document(html);
        let source = html.to_ascii_lowercase();
        let has_body = source.contains("</body");
        let mut nodes = 0;
        let mut scripts = 0;
        let mut comments = 0;
        let mut inline = Vec::new();
        let mut sheets = String::new();
        let mut images = Vec::new();
        for node in doc.tree.nodes() {
            match node.value() {
                Node::Comment(_) => comments += 1,
                Node::Element(el) => {
                    let name = el.name();
                    let in_body = node
                        .ancestors()
                        .any(|a| a.value().as_element().is_some_and(|e| e.name() == "body"));
                    let counted = !matches!(name, "html" | "head" | "meta")
                        && (has_body || in_body || name == "script");
                    nodes += usize::from(counted);
                    if name == "script"
                        && !matches!(
                            el.attr("type").map(str::to_ascii_lowercase).as_deref(),
                            Some("application/ld+json" | "application/json")
                        )
                    {
                        scripts += 1;
                    }
                    if let Some(s) = el.attr("style") {
                        inline.push(s.to_string());
                    }
                    if name == "img"
                        && let Some(src) = el.attr("src")
                    {
                        images.push(src.trim().to_ascii_lowercase());
                    }
                    if name == "style" {
                        for child in node.children() {
                            if let Node::Text(t) = child.value() {
                                sheets.push_str(t);
                                sheets.push('\n');
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        static COMMENT: LazyLock<Regex> = LazyLock::new(|| re(r"(?s)/\*.*?\*/"));
        comments += COMMENT.find_iter(&sheets).count();
        let sheets = COMMENT.replace_all(&sheets, " ").to_ascii_lowercase();
        let mut decls = Vec::new();
        for s in &inline {
            declarations(&s.to_ascii_lowercase(), &mut decls);
        }
        let (mut selectors, mut grouped) = (Vec::new(), 0);
        rules(&sheets, &mut decls, &mut selectors, &mut grouped);
        Found {
            nodes,
            scripts,
            doc,
            source,
            sheets,
            decls,
            selectors,
            grouped,
            comments,
            images,
        }
    }

    /// How many times the document uses the feature `slug`; None when it is not tested.
    pub fn count(&self, slug: &str, category: &str) -> Option<usize> {
        match category {
            "html" => self.html(slug.strip_prefix("html-")?),
            "image" => Some(self.image(slug.strip_prefix("image-")?)),
            "css" => Some(self.css(slug.strip_prefix("css-")?)),
            _ => None,
        }
    }

    fn select(&self, selector: &str) -> Option<usize> {
        let sel = Selector::parse(selector).ok()?;
        Some(self.doc.select(&sel).count())
    }

    fn html(&self, name: &str) -> Option<usize> {
        let selector = match name {
            "doctype" => return Some(self.source.matches("<!doctype").count()),
            "comments" => return Some(self.comments),
            "body" => return Some(usize::from(self.source.contains("<body"))),
            "style" => "style".to_string(),
            "h1-h6" => "h1, h2, h3, h4, h5, h6".into(),
            "lists" => "ul, ol, dl".into(),
            "semantics" => "article, aside, details, figcaption, figure, footer, header, main, \
                            mark, nav, section, summary, time"
                .into(),
            "object" => "object, embed".into(),
            "anchor-links" => "a[href^=\"#\"]".into(),
            "mailto-links" => "a[href^=\"mailto:\"]".into(),
            "image-maps" => "map, img[usemap]".into(),
            "loading-attribute" => "[loading]".into(),
            "meta-color-scheme" => "meta[name=\"color-scheme\"]".into(),
            other => {
                if let Some(t) = other.strip_prefix("input-") {
                    format!("input[type=\"{t}\"]")
                } else if let Some(t) = other.strip_prefix("button-") {
                    format!("button[type=\"{t}\"]")
                } else {
                    // An element of that name, or an attribute (`aria-label`, `srcset`).
                    format!("{other}, [{other}]")
                }
            }
        };
        self.select(&selector)
    }

    fn image(&self, kind: &str) -> usize {
        if kind == "base64" {
            return self
                .images
                .iter()
                .filter(|s| s.starts_with("data:image/"))
                .count();
        }
        let exts: &[&str] = match kind {
            "jpg" => &["jpg", "jpeg"],
            "tiff" => &["tif", "tiff"],
            "heif" => &["heif", "heic"],
            other => &[other][..],
        };
        self.images
            .iter()
            .filter(|s| {
                let path = s.split(['?', '#']).next().unwrap_or("");
                exts.iter().any(|e| {
                    path.rsplit_once('.')
                        .is_some_and(|(_, ext)| ext == *e && !path.starts_with("data:"))
                })
            })
            .count()
    }

    fn props(&self, f: impl Fn(&str) -> bool) -> usize {
        self.decls.iter().filter(|(p, _)| f(p)).count()
    }

    fn values(&self, pattern: &Regex) -> usize {
        self.decls
            .iter()
            .map(|(_, v)| pattern.find_iter(v).count())
            .sum()
    }

    fn display(&self, values: &[&str]) -> usize {
        self.decls
            .iter()
            .filter(|(p, v)| {
                p == "display" && values.contains(&v.trim_end_matches("!important").trim())
            })
            .count()
    }

    fn in_selectors(&self, pattern: &Regex) -> usize {
        self.selectors
            .iter()
            .map(|s| pattern.find_iter(s).count())
            .sum()
    }

    fn css(&self, name: &str) -> usize {
        match name {
            "important" => self
                .decls
                .iter()
                .filter(|(_, v)| v.contains("!important"))
                .count(),
            "comments" => self.comments,
            "nesting" => self.sheets.matches('&').count(),
            "variables" => self.props(|p| p.starts_with("--")) + self.values(&re(r"\bvar\(")),
            "display-flex" => self.display(&["flex", "inline-flex"]),
            "display-grid" => self.display(&["grid", "inline-grid"]),
            "display-none" => self.display(&["none"]),
            "sytem-ui" => self.values(&re(r"\bsystem-ui\b")),
            "modern-color" => self.values(&re(r"\b(oklch|oklab|lab|lch|hwb|color)\(")),
            "rgb" | "rgba" | "unit-calc" | "linear-gradient" | "radial-gradient"
            | "conic-gradient" => {
                let f = name.strip_prefix("unit-").unwrap_or(name);
                self.values(&re(&format!(r"(^|[^\w-]){}\(", regex::escape(f))))
            }
            "unit-percent" => self.values(&re(r"\d%")),
            "unit-initial" => self.values(&re(r"(^|[^\w-])initial\b")),
            _ if name.starts_with("function-") => {
                let f = regex::escape(&name["function-".len()..]);
                self.values(&re(&format!(r"(^|[^\w-]){f}\(")))
            }
            _ if name.starts_with("unit-") => {
                let u = regex::escape(&name["unit-".len()..]);
                self.values(&re(&format!(r"\d{u}\b")))
            }
            _ if name.starts_with("at-media-") => {
                let feature = match &name["at-media-".len()..] {
                    "hover" => "(hover".to_string(),
                    f => f.to_string(),
                };
                re(r"@media[^{]*")
                    .find_iter(&self.sheets)
                    .filter(|m| m.as_str().contains(&feature))
                    .count()
            }
            _ if name.starts_with("at-") => {
                let rule = regex::escape(&name["at-".len()..]);
                re(&format!(r"@(-webkit-)?{rule}\b"))
                    .find_iter(&self.sheets)
                    .count()
            }
            _ if name.starts_with("pseudo-class-") => {
                let p = regex::escape(&name["pseudo-class-".len()..]);
                self.in_selectors(&re(&format!(r"(^|[^:]):{p}([^\w-]|$)")))
            }
            _ if name.starts_with("pseudo-element-") => {
                let p = regex::escape(&name["pseudo-element-".len()..]);
                self.in_selectors(&re(&format!(r"::?{p}([^\w-]|$)")))
            }
            _ if name.starts_with("selector-") => self.selector(&name["selector-".len()..]),
            "inert-attribute" => self.select("[inert]").unwrap_or(0),
            "left-right-top-bottom" => {
                self.props(|p| matches!(p, "left" | "right" | "top" | "bottom"))
            }
            "animation"
            | "transition"
            | "column-layout-properties"
            | "grid-template"
            | "scroll-snap" => {
                let prefix = match name {
                    "column-layout-properties" => "column",
                    n => n,
                };
                self.props(|p| p.starts_with(prefix))
            }
            "text-emphasis" => {
                self.props(|p| p.starts_with("text-emphasis") && p != "text-emphasis-position")
            }
            "border-inline-block" => self.props(|p| matches!(p, "border-inline" | "border-block")),
            "border-inline-block-individual" => {
                self.props(|p| re(r"^border-(inline|block)-(start|end)$").is_match(p))
            }
            "border-inline-block-longhand" => self.props(|p| {
                re(r"^border-(inline|block)(-start|-end)?-(width|style|color)$").is_match(p)
            }),
            "border-radius-logical" => {
                self.props(|p| re(r"^border-(start|end)-(start|end)-radius$").is_match(p))
            }
            "margin-block-start-end"
            | "margin-inline-start-end"
            | "padding-block-start-end"
            | "padding-inline-start-end" => {
                let base = name.trim_end_matches("-start-end");
                self.props(|p| {
                    p.strip_prefix(base)
                        .is_some_and(|rest| rest == "-start" || rest == "-end")
                })
            }
            "margin-inline-block" | "padding-inline-block" => {
                let base = name.trim_end_matches("-inline-block");
                self.props(|p| {
                    p.strip_prefix(base)
                        .is_some_and(|rest| rest == "-inline" || rest == "-block")
                })
            }
            "block-inline-size" => self.props(|p| p == "block-size"),
            "intrinsic-size" => self.props(|p| p == "contain-intrinsic-size"),
            _ => self.props(|p| p == name),
        }
    }

    fn selector(&self, kind: &str) -> usize {
        let pattern = match kind {
            "grouping" => return self.grouped,
            "adjacent-sibling" => r"\+",
            "general-sibling" => r"~",
            "child" => r">",
            "attribute" => r"\[",
            "class" => r"\.[a-z_-]",
            "id" => r"#[a-z_-]",
            "universal" => r"\*",
            "descendant" => r"[\w\])*]\s+[\w.#\[*:]",
            "type" => r"(^|[\s>+~])[a-z][\w-]*",
            "chaining" => r"[\w\])-][.#\[][a-z_-]",
            _ => return 0,
        };
        self.in_selectors(&re(pattern))
    }
}

/// `property: value` pairs of a declaration list.
fn declarations(list: &str, out: &mut Vec<(String, String)>) {
    for d in list.split(';') {
        if let Some((p, v)) = d.split_once(':') {
            let p = p.trim();
            if !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                out.push((p.to_string(), v.trim().to_string()));
            }
        }
    }
}

/// The rules of a style sheet: the declarations of every block that holds no other block,
/// and the selectors in front of blocks that are not at-rules.
fn rules(
    sheet: &str,
    decls: &mut Vec<(String, String)>,
    selectors: &mut Vec<String>,
    grouped: &mut usize,
) {
    let mut start = 0;
    for (i, c) in sheet.char_indices() {
        match c {
            '{' => {
                let prelude = sheet[start..i].trim();
                // What follows the last `;` (an `@import …;` before a rule).
                let prelude = prelude.rsplit(';').next().unwrap_or("").trim();
                if !prelude.is_empty() && !prelude.starts_with('@') && !is_keyframe(prelude) {
                    let items: Vec<&str> = prelude.split(',').map(str::trim).collect();
                    *grouped += usize::from(items.len() > 1);
                    selectors.extend(items.into_iter().map(String::from));
                }
                start = i + 1;
            }
            '}' => {
                declarations(&sheet[start..i], decls);
                start = i + 1;
            }
            _ => {}
        }
    }
}

/// `from`, `to`, `50%`: a keyframe, not a selector.
fn is_keyframe(prelude: &str) -> bool {
    prelude.split(',').all(|p| {
        let p = p.trim();
        p == "from" || p == "to" || p.ends_with('%')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn css_is_read_from_attributes_and_sheets() {
        let f = Found::of(
            r#"<html><head><style>/* c */ @import url(x.css); @media (prefers-color-scheme: dark) {
               .a > p:first-child, #b { margin-inline-start: 1rem !important } }
               @keyframes spin { from { opacity: 0 } to { opacity: 1 } }</style></head>
               <body><p style="color: rgb(0,0,0); width: 50%; --x: 1">x</p></body></html>"#,
        );
        assert_eq!(f.css("at-import"), 1);
        assert_eq!(f.css("at-media"), 1);
        assert_eq!(f.css("at-media-prefers-color-scheme"), 1);
        assert_eq!(f.css("at-keyframes"), 1);
        assert_eq!(f.css("margin-inline-start-end"), 1);
        assert_eq!(f.css("important"), 1);
        assert_eq!(f.css("unit-rem"), 1);
        assert_eq!(f.css("unit-em"), 0, "rem is not em");
        assert_eq!(f.css("unit-percent"), 1);
        assert_eq!(f.css("rgb"), 1);
        assert_eq!(f.css("rgba"), 0);
        assert_eq!(f.css("variables"), 1);
        assert_eq!(f.css("opacity"), 2);
        assert_eq!(f.css("pseudo-class-first-child"), 1);
        assert_eq!(f.css("selector-child"), 1);
        assert_eq!(f.css("selector-id"), 1);
        assert_eq!(f.css("selector-grouping"), 1);
        assert_eq!(f.css("comments"), 1);
        assert_eq!(f.css("z-index"), 0);
    }

    #[test]
    fn html_features_by_element_attribute_and_rule() {
        let f = Found::of(
            r##"<body><h2 aria-label="t">x</h2><a href="#top">t</a><a href="mailto:a@b.test">m</a>
               <input type="radio"><img src="a.PNG?x=1" srcset="b.png 2x"><img src="data:image/gif;base64,R0">
               <ul><li>x</li></ul><script type="application/ld+json">{}</script><script>x()</script></body>"##,
        );
        assert_eq!(f.count("html-h1-h6", "html"), Some(1));
        assert_eq!(f.count("html-aria-label", "html"), Some(1));
        assert_eq!(f.count("html-anchor-links", "html"), Some(1));
        assert_eq!(f.count("html-mailto-links", "html"), Some(1));
        assert_eq!(f.count("html-input-radio", "html"), Some(1));
        assert_eq!(f.count("html-srcset", "html"), Some(1));
        assert_eq!(f.count("html-lists", "html"), Some(1));
        assert_eq!(f.count("html-video", "html"), Some(0));
        assert_eq!(f.count("image-png", "image"), Some(1));
        assert_eq!(f.count("image-base64", "image"), Some(1));
        assert_eq!(f.count("image-gif", "image"), Some(0));
        assert_eq!(f.count("amp", "others"), None);
        assert_eq!(f.scripts, 1, "JSON data is not code");
        assert_eq!(f.nodes, 11);
    }
}
