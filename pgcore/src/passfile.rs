//! libpq's password file (`.pgpass`): `hostname:port:database:username:password`.
//!
//! The Rust client does not read it, but operators and the release rely on it
//! so that passwords never appear on a command line. Semantics follow libpq:
//! the first matching line wins, `*` matches anything, `\` escapes `:` and `\`,
//! and a file readable by group or others is ignored with a warning.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// What a password is looked up for.
pub struct Lookup<'a> {
    pub host: &'a str,
    pub port: u16,
    pub dbname: &'a str,
    pub user: &'a str,
}

/// Finds the password for `lookup` in the file at `path`.
///
/// A missing file is not an error (libpq treats it the same way); an unsafe
/// or unreadable one is reported through `Err` so the caller can warn.
pub fn find_password(path: &Path, lookup: &Lookup) -> Result<Option<String>, String> {
    let metadata = match fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => {
            return Err(format!(
                "cannot read password file {}: {err}",
                path.display()
            ))
        }
    };
    if !metadata.is_file() {
        return Err(format!(
            "password file {} is not a plain file",
            path.display()
        ));
    }
    if metadata.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "password file {} has group or world access; permissions should be u=rw (0600) or less",
            path.display()
        ));
    }
    let text = crate::input::read_text(path)
        .map_err(|why| format!("password file {}: {why}", path.display()))?;
    Ok(match_password(&text, lookup))
}

/// The password of the first line of `text` that matches `lookup`.
pub fn match_password(text: &str, lookup: &Lookup) -> Option<String> {
    let port = lookup.port.to_string();
    // libpq also accepts `localhost` for a connection over a Unix socket.
    let socket = lookup.host.starts_with('/');
    text.lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .filter_map(split_fields)
        .find(|[host, line_port, dbname, user, _]| {
            (matches(host, lookup.host) || (socket && host == "localhost"))
                && matches(line_port, &port)
                && matches(dbname, lookup.dbname)
                && matches(user, lookup.user)
        })
        .map(|[.., password]| password)
}

fn matches(pattern: &str, value: &str) -> bool {
    pattern == "*" || pattern == value
}

/// Splits one line into its five fields, undoing `\:` and `\\` escapes.
/// Lines with fewer fields are skipped, as libpq does.
fn split_fields(line: &str) -> Option<[String; 5]> {
    let mut fields: Vec<String> = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped) => fields.last_mut()?.push(escaped),
                None => fields.last_mut()?.push('\\'),
            },
            // The password is the rest of the line, colons included.
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut()?.push(c),
        }
    }
    fields.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup<'a>(host: &'a str, port: u16, dbname: &'a str, user: &'a str) -> Lookup<'a> {
        Lookup {
            host,
            port,
            dbname,
            user,
        }
    }

    #[test]
    fn first_matching_line_wins() {
        let text = "10.0.0.1:6432:postgres:vcap:first\n*:*:*:vcap:second\n";
        let found = match_password(text, &lookup("10.0.0.1", 6432, "postgres", "vcap"));
        assert_eq!(found.as_deref(), Some("first"));
        let found = match_password(text, &lookup("10.0.0.2", 6432, "postgres", "vcap"));
        assert_eq!(found.as_deref(), Some("second"));
    }

    #[test]
    fn no_line_matches_gives_none() {
        let text = "*:*:*:vcap:secret\n";
        assert_eq!(match_password(text, &lookup("h", 1, "d", "other")), None);
    }

    #[test]
    fn escapes_and_colons_in_the_password_are_kept() {
        let text = r"host\:x:5432:db:us\\er:pa:ss\:w\\d";
        let found = match_password(text, &lookup("host:x", 5432, "db", r"us\er"));
        assert_eq!(found.as_deref(), Some(r"pa:ss:w\d"));
    }

    #[test]
    fn comments_and_short_lines_are_skipped() {
        let text = "# *:*:*:*:comment\nbroken:line\n*:*:*:*:real\n";
        assert_eq!(
            match_password(text, &lookup("h", 1, "d", "u")).as_deref(),
            Some("real")
        );
    }

    #[test]
    fn unix_sockets_match_localhost_lines() {
        let text = "localhost:5432:*:vcap:local\n";
        let found = match_password(
            text,
            &lookup("/var/vcap/sys/run/postgres", 5432, "d", "vcap"),
        );
        assert_eq!(found.as_deref(), Some("local"));
    }

    #[test]
    fn a_password_file_larger_than_the_bound_is_refused_not_read_whole() {
        let path = std::env::temp_dir().join(format!("pgpass-bound-{}", std::process::id()));
        let mut text = "*:*:*:*:secret\n".to_string();
        text.push_str(&"#".repeat(crate::input::MAX_FILE_BYTES as usize));
        fs::write(&path, text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let refused = find_password(&path, &lookup("h", 1, "d", "u"));
        fs::remove_file(&path).unwrap();
        let refused = refused.unwrap_err();
        assert!(refused.contains("larger than"), "{refused}");
    }
}
