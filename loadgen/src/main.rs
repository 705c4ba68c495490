//! `ws-loadgen`: see `lib.rs` for the map of the crate.

use ws_loadgen::cli::{parse_from, Command};

fn main() {
    let cli = match parse_from(std::env::args_os()) {
        Ok(c) => c,
        Err(e) => {
            // clap prints help/version with exit 0 and usage errors with exit 2.
            e.exit();
        }
    };
    let code = match cli.command {
        Command::Run(args) => ws_loadgen::commands::run::run(&args),
        Command::Doctor(args) => ws_loadgen::commands::doctor::run(&args),
        Command::Ceiling(args) => ws_loadgen::commands::ceiling::run(&args),
        Command::Merge(args) => ws_loadgen::commands::merge::run(&args),
        Command::CeilingAgent(args) => ws_loadgen::commands::ceiling::agent::run(&args),
    };
    std::process::exit(code);
}
