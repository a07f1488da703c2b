use clap::Parser;

/// mimalloc instead of glibc's malloc: every role allocates and frees kilobyte-sized buffers per
/// record (a referral's payload, its raw JSON, Avro strings), where glibc kept consolidating its
/// free lists (`malloc_consolidate` and friends took about a fifth of the processor's CPU under
/// `perf`; BENCHMARKS.md "CPU per record").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = hunter::cli::Cli::parse();
    hunter_core::telemetry::init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(hunter::commands::dispatch(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
