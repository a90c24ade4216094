use std::process::ExitCode;

use clap::Parser;
use gatehouse::cli::{self, Cli};
use gatehouse::config::Settings;

fn main() -> ExitCode {
    // Usage errors exit with 2 from here, before anything else runs.
    let cli = Cli::parse();
    if let Err(err) = dotenvy::dotenv()
        && !err.not_found()
    {
        eprintln!("gatehouse: cannot read .env: {err}");
        return ExitCode::FAILURE;
    }
    // The server logs at info; one-shot commands stay quiet unless something is wrong, so a failure
    // is the single line it should be.
    let default_filter = if matches!(cli.command, cli::Command::Serve { .. }) { "info" } else { "warn" };
    gatehouse::log_context::logger(default_filter).init();
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("gatehouse: {err}");
            return ExitCode::FAILURE;
        }
    };
    match cli::run(cli, settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("gatehouse: {err}");
            ExitCode::FAILURE
        }
    }
}
