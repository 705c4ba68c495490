use clap::Parser;

#[global_allocator]
static ALLOC: ws_server::alloc_count::Counting = ws_server::alloc_count::Counting;

fn main() {
    let cfg = ws_server::cli::Config::parse();
    std::process::exit(ws_server::executor::run(cfg));
}
