//! Quoting for every language the programs write: SQL, libpq connection
//! strings, postgresql.conf values and libpq password files.
//!
//! Names and passwords come from operators and may contain anything
//! (quotes, backslashes, semicolons, spaces, unicode); each writer here makes
//! the text mean exactly itself in its target language.

/// An SQL identifier: `"name"` with `"` doubled.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// An SQL string literal that means the same whatever
/// `standard_conforming_strings` says, as libpq's `PQescapeLiteral` writes it:
/// quotes doubled, and when a backslash occurs, an `E'...'` literal with
/// backslashes doubled.
pub fn literal(text: &str) -> String {
    let doubled = text.replace('\'', "''");
    if text.contains('\\') {
        format!("E'{}'", doubled.replace('\\', "\\\\"))
    } else {
        format!("'{doubled}'")
    }
}

/// One value of a libpq connection string (`key=value`): single-quoted, with
/// `\` and `'` escaped by a backslash.
pub fn conninfo_value(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('\'');
    for c in text.chars() {
        if c == '\\' || c == '\'' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('\'');
    quoted
}

/// The `keyword=value` pairs of a libpq connection string in keyword/value
/// form, values unquoted, as libpq's parser reads it: spaces around `=`
/// allowed, a value either single-quoted or up to the next space, `\`
/// escaping the next character in both.
pub fn conninfo_pairs(conninfo: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut chars = conninfo.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut keyword = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            keyword.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(format!(
                "missing \"=\" after \"{keyword}\" in the connection string"
            ));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(format!("unterminated quoted value of \"{keyword}\"")),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((keyword, value));
    }
}

/// A connection string of `pairs`, each value quoted ([`conninfo_value`]).
pub fn conninfo(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(keyword, value)| format!("{keyword}={}", conninfo_value(value)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A string value in postgresql.conf / postgresql.auto.conf: single-quoted,
/// with `'` doubled and `\` doubled (the configuration parser reads
/// backslash escapes), as `pg_basebackup -R` writes it.
pub fn conf_string(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

/// One field of a libpq password file: `:` and `\` escaped with a backslash.
pub fn passfile_field(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if c == '\\' || c == ':' {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_strings_read_back_as_written_whatever_the_values_hold() {
        let pairs: Vec<(String, String)> = [
            ("host", "10.0.0.2"),
            ("user", "o'brien"),
            ("passfile", "/a path/with \\ and ' in it"),
            ("application_name", ""),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(conninfo_pairs(&conninfo(&pairs)).unwrap(), pairs);
        assert_eq!(
            conninfo_pairs("host = a  port=5432 user=x\\ y").unwrap(),
            [("host", "a"), ("port", "5432"), ("user", "x y")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        );
        assert!(conninfo_pairs("host").is_err());
        assert!(conninfo_pairs("host='open").is_err());
    }

    #[test]
    fn identifiers_double_their_quotes() {
        assert_eq!(ident("alice"), "\"alice\"");
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(ident("x; DROP ROLE y; --"), "\"x; DROP ROLE y; --\"");
        assert_eq!(ident("ünï cödé"), "\"ünï cödé\"");
    }

    #[test]
    fn literals_survive_either_string_syntax() {
        assert_eq!(literal("plain"), "'plain'");
        assert_eq!(literal("o'brien"), "'o''brien'");
        assert_eq!(literal(r"back\slash'"), r"E'back\\slash'''");
    }

    #[test]
    fn conninfo_values_escape_quotes_and_backslashes() {
        assert_eq!(conninfo_value("10.0.0.1"), "'10.0.0.1'");
        assert_eq!(conninfo_value("/path with space"), "'/path with space'");
        assert_eq!(conninfo_value(r"a'b\c"), r"'a\'b\\c'");
    }

    #[test]
    fn conf_strings_double_quotes_and_backslashes() {
        assert_eq!(
            conf_string("host='h' passfile='/p'"),
            "'host=''h'' passfile=''/p'''"
        );
        assert_eq!(conf_string(r"a\b"), r"'a\\b'");
    }

    #[test]
    fn passfile_fields_escape_colons_and_backslashes() {
        assert_eq!(passfile_field("pa:ss\\w"), r"pa\:ss\\w");
        assert_eq!(passfile_field("plain pw"), "plain pw");
    }

    #[test]
    fn a_passfile_line_reads_back_as_written() {
        let password = r"p:a\ss w'o;rd ü";
        let line = format!(
            "*:*:*:{}:{}",
            passfile_field("repl"),
            passfile_field(password)
        );
        let lookup = crate::passfile::Lookup {
            host: "10.0.0.1",
            port: 6432,
            dbname: "replication",
            user: "repl",
        };
        assert_eq!(
            crate::passfile::match_password(&line, &lookup).as_deref(),
            Some(password)
        );
    }
}
