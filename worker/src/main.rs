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
    Worker::build(settings).await?.run_until_stopped().await?;
    // Sends the spans still buffered; blocking, so off the executor.
    tokio::task::spawn_blocking(move || telemetry.shutdown()).await?;
    Ok(())
}
