use clap::Parser;

fn main() {
    let cfg = ws_server::cli::Config::parse();
    std::process::exit(ws_server::executor::run(cfg));
}
