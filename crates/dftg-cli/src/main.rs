//! dftg: Diagnose First, Then Generate.
//!
//! Layout: `main.rs` parses the command line and dispatches; one file per command family:
//! `run.rs` (the embedded pipeline), `sim.rs` (the model simulator server), `eval.rs`
//! (`dftg eval chair`), `compare.rs`, `corpus.rs` (example and replay corpora), `pope.rs`
//! (`dftg pope build`, `dftg eval pope`), `vocab.rs` (`dftg vocab from-categories`), `dist.rs`
//! (coordinator, worker, submit, status, cancel, delete). Everything printed to stdout goes
//! through `outln!` (`out.rs`): a reader that closes the pipe ends the command quietly.

#[macro_use]
mod out;

mod compare;
mod compare_html;
mod corpus;
mod dist;
mod eval;
mod pope;
mod progress;
mod run;
mod sim;
mod vocab;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "dftg",
    version,
    about = "Diagnose which objects a vision-language model hallucinates, then generate targeted instruction data"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run both stages in one process (default: the bundled example corpus against the simulator).
    Run(run::RunArgs),
    /// Serve the model simulator (OpenAI-compatible).
    Sim(sim::SimArgs),
    /// Evaluate captions (CHAIR metric) or yes/no answers (POPE).
    #[command(subcommand)]
    Eval(eval::EvalCommand),
    /// Compare two jobs before and after a remedy (report), or two hallucination profiles.
    Compare(compare::CompareArgs),
    /// POPE yes/no probes for any corpus with ground truth.
    #[command(subcommand)]
    Pope(pope::PopeCommand),
    /// Build corpora: a synthetic example corpus, or placeholders for an id → objects map.
    #[command(subcommand)]
    Corpus(corpus::CorpusCommand),
    /// Build vocabularies: a detector's category list (LVIS, Objects365, names) → vocabulary TOML.
    #[command(subcommand)]
    Vocab(vocab::VocabCommand),
    /// Distributed shape: accept jobs over HTTP and drive them over RabbitMQ and a store.
    Coordinator(dist::CoordinatorArgs),
    /// Distributed shape: consume diagnose (inference) or generate (generator) tasks.
    Worker(dist::WorkerArgs),
    /// Submit a job to a coordinator (same job flags as `run`).
    Submit(dist::SubmitArgs),
    /// Show a job's status (or all jobs) from a coordinator.
    Status(dist::StatusArgs),
    /// Cancel a running job on a coordinator.
    Cancel(dist::JobCommandArgs),
    /// Make a coordinator forget a job (cancelled first if running; outputs stay in the store).
    Delete(dist::JobCommandArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // services log each job's start, phases and end at info; one-shot commands only warnings
    let default_filter = match cli.command {
        Command::Coordinator(_) | Command::Worker(_) => "warn,dftg=info,dftg_pipeline=info,dftg_runtime=info,dftg_model=info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DFTG_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        // colour codes only for a person watching; never into a log file or a pipe
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Eval(cmd) => eval::main(cmd),
        Command::Compare(args) => compare::main(args),
        Command::Corpus(cmd) => corpus::main(cmd),
        Command::Vocab(cmd) => vocab::main(cmd),
        Command::Pope(cmd) => pope::main(cmd),
        Command::Run(args) => runtime().and_then(|rt| rt.block_on(run::main(args))),
        Command::Sim(args) => runtime().and_then(|rt| rt.block_on(sim::main(args))),
        Command::Coordinator(args) => runtime().and_then(|rt| rt.block_on(dist::coordinator(args))),
        Command::Worker(args) => runtime().and_then(|rt| rt.block_on(dist::worker(args))),
        Command::Submit(args) => runtime().and_then(|rt| rt.block_on(dist::submit(args))),
        Command::Status(args) => runtime().and_then(|rt| rt.block_on(dist::status(args))),
        Command::Cancel(args) => runtime().and_then(|rt| rt.block_on(dist::cancel(args))),
        Command::Delete(args) => runtime().and_then(|rt| rt.block_on(dist::delete(args))),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// Exit status after a second Ctrl-C / SIGTERM (128 + SIGINT, as shells report it).
const FORCED_EXIT: i32 = 130;

/// Cancels on the first Ctrl-C or SIGTERM: stop taking work, finish what is in hand. A second
/// one exits at once with status 130: a drain stuck on a slow model must not need SIGKILL.
/// The handlers are installed before this returns (call it inside the runtime), so a signal
/// sent once the caller is running work is never lost to the default action.
pub fn shutdown_token() -> tokio_util::sync::CancellationToken {
    let token = tokio_util::sync::CancellationToken::new();
    let t = token.clone();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
            (Ok(mut int), Ok(mut term)) => {
                tokio::spawn(async move {
                    let mut seen = false;
                    loop {
                        let got = tokio::select! {
                            s = int.recv() => s,
                            s = term.recv() => s,
                        };
                        // no more signals can arrive: nothing left to wait for
                        if got.is_none() {
                            return;
                        }
                        on_signal(&t, &mut seen);
                    }
                });
            }
            _ => {
                tokio::spawn(async move {
                    let mut seen = false;
                    while tokio::signal::ctrl_c().await.is_ok() {
                        on_signal(&t, &mut seen);
                    }
                });
            }
        }
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        let mut seen = false;
        while tokio::signal::ctrl_c().await.is_ok() {
            on_signal(&t, &mut seen);
        }
    });
    token
}

/// `seen`: a signal came before (the token itself may have been cancelled for other reasons).
fn on_signal(token: &tokio_util::sync::CancellationToken, seen: &mut bool) {
    if std::mem::replace(seen, true) {
        eprintln!("stopping now: second signal, shards in hand are left for the next run");
        std::process::exit(FORCED_EXIT);
    }
    eprintln!("stopping: finishing the shards in hand (run again to resume; signal again to exit now)");
    token.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every argument of every command says what it is for in `--help`.
    #[test]
    fn every_flag_has_help_text() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() && sub.get_long_about().is_none() {
                    missing.push(format!("{path} {} (the command itself)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&<Cli as clap::CommandFactory>::command(), "dftg", &mut missing);
        assert!(missing.is_empty(), "arguments without help text:\n{}", missing.join("\n"));
    }
}
