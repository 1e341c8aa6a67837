//! Tests that span both binaries live in `tests/`: `compose` (the compose
//! file and the Dockerfile, checked without Docker) runs anywhere; `stack`
//! (the API and the worker on the dev stack's servers, and the dashboards,
//! alert rules and traces that observe them) runs with `--features
//! dev-stack`, as `infra/test` does. The helpers they share with the other
//! suites are in `shortener-testkit`.
