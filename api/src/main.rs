use shortener_api::{
    Application,
    config::{LoadSettings, Settings},
    startup,
};

const USAGE: &str = "usage: shortener-api [serve | migrate]
  serve    run the service (the default)
  migrate  create or update the store's schema, then exit";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let command = std::env::args().nth(1);
    if matches!(command.as_deref(), Some("-h" | "--help" | "help")) {
        println!("{USAGE}");
        return Ok(());
    }
    let settings = Settings::load()?;
    let telemetry = runtime::telemetry::init("shortener-api", &settings.log, &settings.traces)?;
    match command.as_deref() {
        None | Some("serve") => {
            // The root of the shutdown: SIGTERM or SIGINT cancel it.
            let shutdown = runtime::signals::shutdown_token()?;
            let app = tokio::select! {
                app = Application::build(settings) => app?,
                // Stopped while still starting (waiting for a store, say).
                () = shutdown.cancelled() => return Ok(()),
            };
            app.with_stop_token(shutdown).run_until_stopped().await?
        }
        Some("migrate") => startup::migrate(&settings).await?,
        Some(other) => anyhow::bail!("unknown command {other:?}\n{USAGE}"),
    }
    // Sends the spans still buffered; blocking, so off the executor.
    tokio::task::spawn_blocking(move || telemetry.shutdown()).await?;
    Ok(())
}
