//! Reading what operators and templates hand the programs (manifest
//! overlays, templates, the provisioning spec) within bounds: regular files
//! of at most [`MAX_FILE_BYTES`], and YAML nested at most [`MAX_YAML_NESTING`]
//! levels deep. A device such as `/dev/zero` would otherwise be read until
//! memory runs out, and libyaml's time grows with the square of the nesting
//! (a 500 KB file of nested `{a: ` takes more than half a minute).

use std::io::{ErrorKind, Read};
use std::path::Path;

/// The largest file read: 1 MiB, far above any manifest overlay, template
/// or provisioning spec.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// The deepest YAML nesting read: a BOSH manifest needs about a dozen levels.
pub const MAX_YAML_NESTING: usize = 64;

/// The text of the regular file at `path`, or what is wrong with it, as a
/// phrase for the caller to prefix with the file's name.
pub fn read_text(path: &Path) -> Result<String, String> {
    read_text_at_most(path, MAX_FILE_BYTES)
}

/// Like [`read_text`], for a file that is never larger than `max_bytes`
/// (pg-monitor's state file, say) when it is what it should be.
pub fn read_text_at_most(path: &Path, max_bytes: u64) -> Result<String, String> {
    let cannot_read = |err: std::io::Error| match err.kind() {
        ErrorKind::NotFound => "no such file".to_string(),
        _ => format!("cannot read: {err}"),
    };
    // Checked before opening: opening a FIFO would wait for a writer.
    if !std::fs::metadata(path).map_err(cannot_read)?.is_file() {
        return Err("not a regular file (directories, devices and pipes are not read)".into());
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(max_bytes + 1).read_to_end(&mut bytes))
        .map_err(cannot_read)?;
    if bytes.len() as u64 > max_bytes {
        return Err(format!("larger than {}, the most read", size(max_bytes)));
    }
    String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())
}

/// `1048576 bytes (1 MiB)`: exact, and readable at a glance.
fn size(bytes: u64) -> String {
    match bytes {
        _ if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) => {
            format!("{bytes} bytes ({} MiB)", bytes >> 20)
        }
        _ if bytes >= 1 << 10 && bytes.is_multiple_of(1 << 10) => {
            format!("{bytes} bytes ({} KiB)", bytes >> 10)
        }
        _ => format!("{bytes} bytes"),
    }
}

/// The one secret in a password file (the release renders the replication
/// password into one): the file's text without its final line break, or
/// what is wrong with it, as a phrase for the caller to prefix with the
/// flag and file. Empty, or holding a line break or NUL (which a libpq
/// password file cannot carry), is refused.
pub fn read_password(path: &Path) -> Result<String, String> {
    let text = read_text(path)?;
    let password = text
        .strip_suffix('\n')
        .map(|rest| rest.strip_suffix('\r').unwrap_or(rest))
        .unwrap_or(&text);
    if password.is_empty() {
        return Err("the file is empty".into());
    }
    if password.contains(['\n', '\r', '\0']) {
        return Err(
            "the password holds a line break or NUL, which a libpq password file cannot carry"
                .into(),
        );
    }
    Ok(password.to_string())
}

/// Where (line, column, from 1) YAML `text` first nests deeper than `max`,
/// estimated without parsing, so that the parser never sees it: open flow
/// collections (`[`, `{` outside quotes and comments) plus block levels
/// (each deeper indentation).
pub fn yaml_too_deep(text: &str, max: usize) -> Option<(usize, usize)> {
    let (mut flow, mut quote, mut indents) = (0usize, None, Vec::<usize>::new());
    for (number, line) in text.lines().enumerate() {
        let body = line.trim_start_matches([' ', '-']);
        if quote.is_none() && flow == 0 && !body.is_empty() && !body.starts_with('#') {
            let column = line.len() - body.len();
            while indents.last().is_some_and(|&at| at >= column) {
                indents.pop();
            }
            indents.push(column);
        }
        let (mut previous, mut chars) = (' ', line.char_indices().peekable());
        while let Some((at, c)) = chars.next() {
            match (quote, c) {
                (Some('"'), '\\') => {
                    chars.next();
                }
                // Inside single quotes, '' is a quote, not the end.
                (Some(q), _)
                    if c == q && !(q == '\'' && chars.next_if(|&(_, n)| n == q).is_some()) =>
                {
                    quote = None
                }
                (Some(_), _) => {}
                (None, '#') if previous.is_whitespace() => break,
                (None, '\'' | '"') if previous.is_whitespace() || "[{,:?-".contains(previous) => {
                    quote = Some(c)
                }
                (None, '[' | '{') => flow += 1,
                (None, ']' | '}') => flow = flow.saturating_sub(1),
                _ => {}
            }
            if flow + indents.len() > max {
                return Some((number + 1, at + 1));
            }
            previous = c;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_file_loses_only_its_final_line_break() {
        let dir = std::env::temp_dir().join(format!("pgcore-password-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("password");
        std::fs::write(&file, " sp ace\\:'\r\n").unwrap();
        assert_eq!(read_password(&file).unwrap(), " sp ace\\:'");
        std::fs::write(&file, "two\nlines\n").unwrap();
        assert!(read_password(&file).unwrap_err().contains("line break"));
        std::fs::write(&file, "\n").unwrap();
        assert_eq!(read_password(&file).unwrap_err(), "the file is empty");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn nested_flow(depth: usize) -> String {
        format!("{}1{}", "{a: ".repeat(depth), "}".repeat(depth))
    }

    #[test]
    fn nesting_up_to_the_limit_passes_and_deeper_is_found_where_it_starts() {
        let max = MAX_YAML_NESTING;
        assert_eq!(
            yaml_too_deep(&format!("x: {}\n", nested_flow(max - 1)), max),
            None
        );
        assert_eq!(
            yaml_too_deep(&format!("x: {}\n", nested_flow(max)), max),
            Some((1, 4 + 4 * (max - 1)))
        );
        let block: String = (0..=max)
            .map(|level| format!("{}k{level}:\n", " ".repeat(level)))
            .collect();
        assert_eq!(
            yaml_too_deep(&block, max).map(|(line, _)| line),
            Some(max + 1)
        );
    }

    #[test]
    fn brackets_in_quotes_and_comments_do_not_count() {
        let max = MAX_YAML_NESTING;
        let deep = "[".repeat(max + 1);
        for text in [
            format!("a: '{deep}'\n"),
            format!("a: \"{deep}\"\n"),
            format!("a: 'it''s {deep}'\n"),
            format!("a: \"\\\" {deep}\"\n"),
            format!("a: 1 # {deep}\n"),
            format!("a: it's\nb: {}\n", nested_flow(3)),
        ] {
            assert_eq!(yaml_too_deep(&text, max), None, "{text}");
        }
        // Closing brackets inside quotes cannot hide real ones.
        let hidden = format!("{}1{}", "{\"}\": ".repeat(max + 1), "}".repeat(max + 1));
        assert!(yaml_too_deep(&hidden, max).is_some());
    }

    #[test]
    fn only_small_regular_files_are_read() {
        let dir = std::env::temp_dir().join(format!("pgcore-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("o.yml");
        std::fs::write(&file, "a: 1\n").unwrap();
        assert_eq!(read_text(&file).unwrap(), "a: 1\n");
        std::fs::write(&file, vec![b'#'; MAX_FILE_BYTES as usize + 1]).unwrap();
        assert_eq!(
            read_text(&file).unwrap_err(),
            "larger than 1048576 bytes (1 MiB), the most read"
        );
        std::fs::write(&file, vec![b'#'; 64 * 1024]).unwrap();
        assert!(read_text_at_most(&file, 64 * 1024).is_ok());
        std::fs::write(&file, vec![b'#'; 64 * 1024 + 1]).unwrap();
        assert_eq!(
            read_text_at_most(&file, 64 * 1024).unwrap_err(),
            "larger than 65536 bytes (64 KiB), the most read"
        );
        assert!(read_text(&dir).unwrap_err().contains("not a regular file"));
        assert!(read_text(Path::new("/dev/zero"))
            .unwrap_err()
            .contains("not a regular file"));
        assert_eq!(read_text(&dir.join("none")).unwrap_err(), "no such file");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
