//! serde's and toml's error texts, said the way an operator reads a configuration file.

/// Rewrites a deserialization error for a setting: `invalid type: string "x", expected
/// usize` becomes `expected a whole number, found the string "x"`, `unknown variant `x`,
/// expected `a` or `b`` becomes `"x": expected "a" or "b"`.
pub fn explain(message: &str) -> String {
    let m = message.trim();
    if let Some(rest) = m.strip_prefix("unknown variant `")
        && let Some((value, expected)) = rest.split_once("`, expected ")
    {
        return format!("{value:?}: expected {}", choices(expected));
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = m.strip_prefix(prefix)
            && let Some((found, expected)) = rest.split_once(", expected ")
        {
            return format!("expected {}, found {}", kind(expected), found_text(found));
        }
    }
    m.to_string()
}

/// `` one of `a`, `b`, `c` `` or `` `a` or `b` `` as `"a", "b" or "c"`.
fn choices(expected: &str) -> String {
    let names: Vec<String> = expected
        .split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, n)| format!("{n:?}"))
        .collect();
    match names.len() {
        0 => expected.to_string(),
        1 => names[0].clone(),
        n => format!("{} or {}", names[..n - 1].join(", "), names[n - 1]),
    }
}

/// What a Rust type name means in a TOML file.
fn kind(expected: &str) -> String {
    let e = expected.trim();
    let whole = [
        "usize", "u8", "u16", "u32", "u64", "u128", "isize", "i8", "i16", "i32", "i64", "i128",
    ];
    if whole.contains(&e) {
        let signed = e.starts_with('i');
        return if signed {
            "a whole number".into()
        } else {
            "a whole number of 0 or more".into()
        };
    }
    match e {
        "f32" | "f64" => "a number".into(),
        "a boolean" | "bool" => "true or false".into(),
        "a sequence" => "a list such as [\"a\", \"b\"]".into(),
        "a string" => "a string in quotes".into(),
        "a map" | "struct" => "a table".into(),
        other if other.starts_with("struct ") || other.starts_with("a map") => "a table".into(),
        other => other.to_string(),
    }
}

/// serde's "found" part, shortened: `string "x"` stays, `sequence` is `a list`.
fn found_text(found: &str) -> String {
    let f = found.trim();
    match f {
        "sequence" => "a list".into(),
        "map" => "a table".into(),
        other => other
            .replace("integer `", "`")
            .replace("floating point `", "`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_texts_become_operator_texts() {
        assert_eq!(
            explain("invalid type: string \"ten\", expected usize"),
            "expected a whole number of 0 or more, found string \"ten\""
        );
        assert_eq!(
            explain("invalid type: string \"a.example\", expected a sequence"),
            "expected a list such as [\"a\", \"b\"], found string \"a.example\""
        );
        assert_eq!(
            explain("invalid value: integer `-1`, expected u32"),
            "expected a whole number of 0 or more, found `-1`"
        );
        assert_eq!(
            explain("unknown variant `rejct`, expected `reject` or `normalize`"),
            "\"rejct\": expected \"reject\" or \"normalize\""
        );
        assert_eq!(
            explain("unknown variant `x`, expected one of `off`, `optional`, `required`"),
            "\"x\": expected \"off\", \"optional\" or \"required\""
        );
        assert_eq!(
            explain("invalid type: integer `3`, expected a boolean"),
            "expected true or false, found `3`"
        );
    }
}
