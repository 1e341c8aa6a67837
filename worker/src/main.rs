use shortener_worker::{
    Worker,
    config::{LoadSettings, Settings},
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).is_some() {
        println!(
            "usage: shortener-worker\n  consumes click events from Kafka into exact counts in \
             ScyllaDB; configured like shortener-api (config/*.toml, SHORTENER__*)"
        );
        return Ok(());
    }
    let settings = Settings::load()?;
    let telemetry = runtime::telemetry::init("shortener-worker", &settings.log, &settings.traces)?;
    // The root of the shutdown: SIGTERM or SIGINT cancel it.
    let shutdown = runtime::signals::shutdown_token()?;
    let worker = tokio::select! {
        worker = Worker::build(settings) => worker?,
        // Stopped while still starting (waiting for a broker, say).
        () = shutdown.cancelled() => return Ok(()),
    };
    worker.with_stop_token(shutdown).run_until_stopped().await?;
    // Sends the spans still buffered; blocking, so off the executor.
    tokio::task::spawn_blocking(move || telemetry.shutdown()).await?;
    Ok(())
}
