//! SCRAM-SHA-256 verifiers: made client-side, so the server (and its statement
//! log) never sees a cleartext password, and checked against the stored one,
//! so that a second provisioning run does not change a password that is
//! already right.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// A new verifier for `password` with a random salt, as `ALTER ROLE ...
/// PASSWORD` accepts it (the server stores a verifier as it is).
pub fn verifier(password: &str) -> String {
    postgres_protocol::password::scram_sha_256(password.as_bytes())
}

/// Whether `stored` (pg_authid.rolpassword) is a SCRAM-SHA-256 verifier of
/// `password`. MD5 hashes and anything else never match, so they are replaced
/// by a SCRAM verifier on the next run.
pub fn matches(stored: &str, password: &str) -> bool {
    let Some(parts) = parse(stored) else {
        return false;
    };
    let salted = salted_password(&prepare(password), &parts.salt, parts.iterations);
    let client_key = hmac(&salted, b"Client Key");
    let stored_key: [u8; 32] = Sha256::digest(client_key).into();
    stored_key == parts.stored_key.as_slice()
}

struct Parts {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: Vec<u8>,
}

/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64 fields).
fn parse(stored: &str) -> Option<Parts> {
    let rest = stored.strip_prefix("SCRAM-SHA-256$")?;
    let (iterations_salt, keys) = rest.split_once('$')?;
    let (iterations, salt) = iterations_salt.split_once(':')?;
    let (stored_key, _server_key) = keys.split_once(':')?;
    let iterations: u32 = iterations.parse().ok().filter(|&n| n > 0)?;
    Some(Parts {
        iterations,
        salt: STANDARD.decode(salt).ok()?,
        stored_key: STANDARD.decode(stored_key).ok()?,
    })
}

/// SASLprep as the server and libpq apply it; a password it rejects is used
/// as it is (the same fallback they use).
fn prepare(password: &str) -> Vec<u8> {
    match stringprep::saslprep(password) {
        Ok(prepared) => prepared.into_owned().into_bytes(),
        Err(_) => password.as_bytes().to_vec(),
    }
}

/// PBKDF2-HMAC-SHA-256 with a 32-byte output ("Hi" in RFC 5802).
fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password, salt, iterations)
}

fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_verifier_matches_its_password_only() {
        for password in ["hunter2", "o'brien \"x\" \\ ; --", "pässwörd ü", " spaces "] {
            let stored = verifier(password);
            assert!(stored.starts_with("SCRAM-SHA-256$4096:"), "{stored}");
            assert!(
                matches(&stored, password),
                "{password:?} does not match its verifier"
            );
            assert!(!matches(&stored, &format!("{password}x")));
        }
    }

    #[test]
    fn verifiers_made_by_the_server_match() {
        // rolpassword after CREATE ROLE ... PASSWORD '<cleartext>' on PostgreSQL 15
        // (password_encryption = scram-sha-256): the server's SASLprep and ours agree.
        let made_by_server = [
            (
                "secret",
                "SCRAM-SHA-256$4096:lk9bYlVCnO5+ATMzTsX3MA==$\
                 Y/YDGkILzs1AH8+5mvRwOoa0okii2BDS9aYvdjdqHWw=:sLiDWTO6zMnx9BIdMSEAq+rTEZJAkduTkfuqb7kVV+w=",
            ),
            (
                "pässwörd ü",
                "SCRAM-SHA-256$4096:LGW779hCDTPImRBXNvKx9g==$\
                 1gNnRiIUxL3C7f5s9VYl4EM5nsB7oqJzSAiIy/zELTo=:+pBSXMXmTc55d0JV0iwD5tEDx3ts3v3U3MhBJ8dnCFQ=",
            ),
        ];
        for (password, stored) in made_by_server {
            assert!(matches(stored, password), "{password:?}");
            assert!(!matches(stored, &password.to_uppercase()));
        }
    }

    #[test]
    fn md5_hashes_and_garbage_never_match() {
        let md5 = postgres_protocol::password::md5(b"secret", "alice");
        assert!(!matches(&md5, "secret"));
        assert!(!matches("", "secret"));
        assert!(!matches("SCRAM-SHA-256$0:AA==$AA==:AA==", "secret"));
        assert!(!matches("SCRAM-SHA-256$4096:not base64$x:y", "secret"));
    }
}
