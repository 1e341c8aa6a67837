//! The baseline of the redirect benchmark: bare actix-web answering a 302
//! from an in-memory map, and nothing else. The shortener's redirect path
//! is measured against it, on the same machine, with the same load.
//!
//! Usage: `redirect-baseline ADDR CODES_FILE` (lines of `code url`).

use std::collections::HashMap;

use actix_web::{
    App, HttpRequest, HttpResponse, HttpServer,
    http::header::{HeaderValue, LOCATION},
    web,
};
use anyhow::Context;

type Links = HashMap<String, HeaderValue>;

async fn redirect(req: HttpRequest, links: web::Data<Links>) -> HttpResponse {
    match links.get(req.match_info().get("code").unwrap_or_default()) {
        Some(location) => HttpResponse::Found()
            .insert_header((LOCATION, location.clone()))
            .finish(),
        None => HttpResponse::NotFound().finish(),
    }
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args
        .next()
        .context("usage: redirect-baseline ADDR CODES_FILE")?;
    let file = args
        .next()
        .context("usage: redirect-baseline ADDR CODES_FILE")?;
    let text = std::fs::read_to_string(&file).with_context(|| format!("reading {file}"))?;
    let mut links = Links::new();
    for line in text.lines() {
        let (code, url) = line.split_once(' ').context("lines are `code url`")?;
        links.insert(code.to_owned(), HeaderValue::from_str(url)?);
    }
    eprintln!("baseline: {} links, listening on {addr}", links.len());
    let links = web::Data::new(links);
    HttpServer::new(move || {
        App::new()
            .app_data(links.clone())
            .route("/{code}", web::get().to(redirect))
    })
    .bind(&addr)?
    .run()
    .await?;
    Ok(())
}
