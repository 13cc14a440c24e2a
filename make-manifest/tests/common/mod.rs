//! Running the real binary in a scratch directory.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A scratch directory the binary runs in; removed on drop.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a file into the scratch directory and returns its name.
    pub fn file(&self, name: &str, text: &str) -> String {
        std::fs::write(self.path(name), text).expect("write a scratch file");
        name.to_string()
    }

    /// Runs make-manifest with `args` in the scratch directory.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_make-manifest"))
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("MAKE_MANIFEST_OUTPUT")
            .env_remove("MAKE_MANIFEST_TEMPLATES")
            .env_remove("MAKE_MANIFEST_RELEASE_DIR")
            .output()
            .expect("make-manifest runs")
    }

    /// Runs make-manifest expecting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "make-manifest {args:?} should succeed, exited {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8 stdout")
    }

    /// Runs make-manifest expecting bad input: exit 2, exactly one line on
    /// stderr, nothing on stdout, no output directory. Returns the line.
    pub fn bad_input(&self, args: &[&str]) -> String {
        let out_dir = self.path("out");
        let mut all: Vec<&str> = args.to_vec();
        let out_dir_text = out_dir.to_str().expect("UTF-8 path").to_string();
        all.extend(["-o", &out_dir_text]);
        let out = self.run(&all);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(2),
            "make-manifest {args:?} should exit 2 on bad input; stderr: {stderr}"
        );
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "expected a one-line error, got: {stderr}");
        assert!(
            lines[0].starts_with("make-manifest: error: "),
            "error line should start with `make-manifest: error: `: {stderr}"
        );
        assert!(
            out.stdout.is_empty(),
            "nothing on stdout expected, got: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            !out_dir.exists(),
            "bad input must not create {}",
            out_dir.display()
        );
        lines[0].to_string()
    }
}

/// Reads a file to a string, naming it when that fails.
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()))
}
