//! `make-manifest`: BOSH v2 manifests for the postgres release (see `--help`).

mod cli;

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use cli::Cli;
use make_manifest::output::{self, Destination, Report};
use make_manifest::{generate, Generated};

const BAD_INPUT: u8 = 2;
const WRITE_FAILED: u8 = 1;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return clap_error(err),
    };
    if cli.json && cli.to_stdout() {
        return fail(
            BAD_INPUT,
            "--json reports the files written; it cannot share stdout with -o -",
        );
    }
    if cli.output.is_empty() {
        return fail(
            BAD_INPUT,
            "-o: the output directory is empty (use - for stdout)",
        );
    }
    let generated = match generate(&cli.request()) {
        Ok(generated) => generated,
        Err(err) => return fail(BAD_INPUT, &err.to_string()),
    };
    let release_dir = cli
        .release_dir
        .as_ref()
        .map_or_else(|| "release".to_string(), |dir| dir.display().to_string());

    if cli.to_stdout() {
        print!("{}", generated.manifest_text);
        let commands = output::next_commands(&generated, &Destination::Stdout, &release_dir);
        eprint!(
            "{}",
            summary(
                &generated,
                None,
                &commands,
                &notes(&generated, &Destination::Stdout)
            )
        );
        return ExitCode::SUCCESS;
    }

    let dir = Path::new(&cli.output);
    let files = [
        (
            output::MANIFEST_FILE,
            generated.manifest_text.as_str(),
            output::MANIFEST_MODE,
        ),
        (
            output::CLOUD_CONFIG_FILE,
            generated.cloud_config_text.as_str(),
            output::CLOUD_CONFIG_MODE,
        ),
    ];
    let written = match output::write_atomically(dir, &files) {
        Ok(written) => written,
        Err(err) => return fail(WRITE_FAILED, &format!("{err:#}")),
    };
    let manifest = written[0].display().to_string();
    let cloud_config = written[1].display().to_string();
    let destination = Destination::Files {
        manifest: manifest.clone(),
        cloud_config: cloud_config.clone(),
    };
    let commands = output::next_commands(&generated, &destination, &release_dir);
    let notes = notes(&generated, &destination);
    if cli.json {
        let report = Report {
            iaas: generated.iaas.name(),
            topology: generated.topology.name(),
            deployment: &generated.deployment,
            manifest: Some(&manifest),
            cloud_config: Some(&cloud_config),
            commands: &commands,
            notes: &notes,
        };
        match serde_json::to_string(&report) {
            Ok(json) => println!("{json}"),
            Err(err) => {
                return fail(
                    WRITE_FAILED,
                    &format!("cannot encode the report as JSON: {err}"),
                )
            }
        }
    } else {
        print!(
            "{}",
            summary(
                &generated,
                Some((&manifest, &cloud_config)),
                &commands,
                &notes
            )
        );
    }
    ExitCode::SUCCESS
}

fn notes(generated: &Generated, destination: &Destination) -> Vec<String> {
    let mut notes = generated.notes.clone();
    notes.extend(output::standing_notes(destination));
    notes
}

/// What was written, the commands to run next, and the notes.
fn summary(
    generated: &Generated,
    files: Option<(&str, &str)>,
    commands: &[String],
    notes: &[String],
) -> String {
    let what = format!(
        "deployment {}: {}, {}",
        generated.deployment,
        generated.iaas,
        generated.topology.name()
    );
    let mut text = match files {
        Some((manifest, cloud_config)) => format!("wrote {manifest} and {cloud_config} ({what})\n"),
        None => format!("wrote the manifest to stdout ({what})\n"),
    };
    text.push_str("\nnext:\n");
    for command in commands {
        text.push_str(&format!("  {command}\n"));
    }
    if !notes.is_empty() {
        text.push('\n');
        for note in notes {
            text.push_str(&format!("note: {note}\n"));
        }
    }
    text
}

/// One line on stderr, whatever the message holds (a template engine's or a
/// YAML parser's reason could span lines).
fn fail(code: u8, message: &str) -> ExitCode {
    let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
    eprintln!("make-manifest: error: {message}");
    ExitCode::from(code)
}

/// clap's errors span several lines (usage, tips); ours are one line.
fn clap_error(err: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
    ) {
        let _ = err.print();
        return ExitCode::SUCCESS;
    }
    let rendered = err.render().to_string();
    let line = rendered
        .lines()
        .map(str::trim)
        .filter(|line| {
            !line.is_empty()
                && !line.starts_with("Usage:")
                && !line.starts_with("For more information")
        })
        .collect::<Vec<_>>()
        .join(" ");
    let line = line.strip_prefix("error: ").unwrap_or(&line);
    fail(BAD_INPUT, &format!("{line} (see make-manifest --help)"))
}
