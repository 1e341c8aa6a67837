use shortener_api::{Application, config::Settings, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load()?;
    telemetry::init(&settings.log);
    Application::build(settings)
        .await?
        .run_until_stopped()
        .await?;
    Ok(())
}
