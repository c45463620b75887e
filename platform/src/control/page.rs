//! The status page: server-rendered HTML at `/` (every job) and `/jobs/{name}` (one job
//! with its recent invocations), refreshing itself every few seconds.
//!
//! Signing in posts a token to `/signin`; it comes back as an `HttpOnly`, `SameSite=Strict`
//! cookie that only these pages accept (the API takes the `Authorization` header alone,
//! so a cookie can never make an API call). Every value shown is HTML-escaped.

use std::fmt::Write as _;

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Router, body::Bytes};

use super::api::ApiState;
use super::auth::Caller;
use crate::status::JobStatus;

const COOKIE: &str = "sluice_token";
const REFRESH_SECONDS: u32 = 5;

/// The page routes, to merge into the API router.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/", get(overview))
        .route("/jobs/{name}", get(job_page))
        .route("/signin", post(sign_in))
        .route("/signout", post(sign_out))
}

/// A caller signed in through the cookie; `None` shows the sign-in form.
struct PageCaller(Option<Caller>);

impl FromRequestParts<ApiState> for PageCaller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|cookies| cookies.split(';'))
            .filter_map(|cookie| cookie.trim().split_once('='))
            .find(|(name, _)| *name == COOKIE)
            .map(|(_, value)| value.to_owned());
        let caller = if state.tokens.is_empty() {
            state.tokens.authenticate(None)
        } else {
            token.and_then(|token| {
                let header = format!("Bearer {}", percent_decode(&token));
                state.tokens.authenticate(Some(header.as_bytes()))
            })
        };
        Ok(Self(caller))
    }
}

fn percent_decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("t={text}").as_bytes())
        .next()
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default()
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(title: &str, refresh: bool, body: &str) -> Response {
    let refresh = if refresh {
        format!("<meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">")
    } else {
        String::new()
    };
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">{refresh}\
         <title>{title}</title><style>{STYLE}</style></head><body>\
         <header><a href=\"/\">Sluice</a></header><main>{body}</main></body></html>",
        title = escape(title),
    );
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response()
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#1d2430;background:#f6f7f9}\
header{background:#1d2430;padding:.6rem 1.2rem}header a{color:#fff;font-weight:600;text-decoration:none}\
main{padding:1.2rem}table{border-collapse:collapse;background:#fff;width:100%}\
th,td{padding:.35rem .6rem;border-bottom:1px solid #e3e6ea;text-align:left;font-size:.9rem}\
th{background:#eef0f3}.running{color:#17803d}.paused,.stopped{color:#8a6d00}\
.failed,.degraded{color:#b42318}pre{white-space:pre-wrap;margin:0;font-size:.8rem}\
form.signin{background:#fff;padding:1.2rem;max-width:24rem}input{padding:.4rem;width:100%;margin:.4rem 0}";

fn sign_in_form(message: &str) -> Response {
    let body = format!(
        "<form class=\"signin\" method=\"post\" action=\"/signin\"><h1>Sign in</h1>\
         <p>{}</p><label>API token<input type=\"password\" name=\"token\" autocomplete=\"off\" autofocus></label>\
         <button type=\"submit\">Sign in</button></form>",
        escape(message)
    );
    let mut response = page("Sluice: sign in", false, &body);
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    response
}

async fn sign_in(State(state): State<ApiState>, body: Bytes) -> Response {
    let token = url::form_urlencoded::parse(&body)
        .find(|(name, _)| name == "token")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    let header_value = format!("Bearer {token}");
    if state.tokens.is_empty()
        || state
            .tokens
            .authenticate(Some(header_value.as_bytes()))
            .is_none()
    {
        return sign_in_form("That token is not valid.");
    }
    let encoded: String = url::form_urlencoded::byte_serialize(token.as_bytes()).collect();
    let cookie = format!("{COOKIE}={encoded}; Path=/; HttpOnly; SameSite=Strict");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

async fn sign_out() -> Response {
    let cookie = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

fn state_cell(state: &str) -> String {
    format!("<span class=\"{0}\">{0}</span>", escape(state))
}

fn opt<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |value| escape(&value.to_string()))
}

async fn overview(State(state): State<ApiState>, PageCaller(caller): PageCaller) -> Response {
    if caller.is_none() {
        return sign_in_form("Sign in with an API token (read or admin).");
    }
    let context = state.supervisor.context();
    let jobs = match context.registry.jobs().await {
        Ok(jobs) => jobs,
        Err(error) => {
            return page(
                "Sluice",
                true,
                &format!("<p>{}</p>", escape(&error.to_string())),
            );
        }
    };
    let statuses = context.board.snapshot();
    let mut rows = String::new();
    for job in &jobs {
        let status = statuses.iter().find(|status| status.job == job.name);
        let _ = write!(
            rows,
            "<tr><td><a href=\"/jobs/{name}\">{name}</a></td><td>{state}</td><td>{version}</td>\
             <td>{running}</td><td>{busy}</td><td>{idle}</td><td>{backlog}</td><td>{records}</td>\
             <td>{rate}</td><td>{error}</td></tr>",
            name = escape(&job.name),
            state = state_cell(job.state.as_str()),
            version = job.version,
            running = opt(state.supervisor.running_version(&job.name)),
            busy = opt(status.map(|s| s.instances.busy)),
            idle = opt(status.map(|s| s.instances.idle)),
            backlog = opt(status.and_then(|s| s.backlog)),
            records = opt(status.map(|s| s.stats.records_in)),
            rate = opt(status
                .and_then(|s| s.instance_rate)
                .map(|rate| format!("{rate:.0}/s"))),
            error = escape(
                job.reason
                    .as_deref()
                    .or(status.and_then(|s| s.reason.as_deref()))
                    .unwrap_or("")
            ),
        );
    }
    let body = format!(
        "<h1>Jobs</h1><table><thead><tr><th>job</th><th>state</th><th>version</th>\
         <th>running</th><th>busy</th><th>idle</th><th>backlog</th><th>records in</th>\
         <th>rate per instance</th><th>last error</th></tr></thead><tbody>{rows}</tbody></table>\
         <p>{count} jobs · refreshes every {REFRESH_SECONDS} s</p>\
         <form method=\"post\" action=\"/signout\"><button>Sign out</button></form>",
        count = jobs.len()
    );
    page("Sluice: jobs", true, &body)
}

async fn job_page(
    State(state): State<ApiState>,
    PageCaller(caller): PageCaller,
    Path(name): Path<String>,
) -> Response {
    if caller.is_none() {
        return sign_in_form("Sign in with an API token (read or admin).");
    }
    let context = state.supervisor.context();
    let (job, invocations) = match (
        context.registry.job(&name).await,
        context.registry.invocations(&name, 50).await,
    ) {
        (Ok(Some(job)), Ok(invocations)) => (job, invocations),
        (Ok(None), _) => {
            let mut response = page(
                "Sluice",
                false,
                &format!("<p>No job {}.</p>", escape(&name)),
            );
            *response.status_mut() = StatusCode::NOT_FOUND;
            return response;
        }
        (Err(error), _) | (_, Err(error)) => {
            return page(
                "Sluice",
                true,
                &format!("<p>{}</p>", escape(&error.to_string())),
            );
        }
    };
    let status: Option<JobStatus> = context
        .board
        .snapshot()
        .into_iter()
        .find(|status| status.job == name);
    let mut body = format!(
        "<h1>{name}</h1><table><tbody><tr><th>state</th><td>{state}</td></tr>\
         <tr><th>version</th><td>{version}</td></tr><tr><th>reason</th><td>{reason}</td></tr>",
        name = escape(&job.name),
        state = state_cell(job.state.as_str()),
        version = job.version,
        reason = opt(job.reason.as_deref()),
    );
    if let Some(status) = &status {
        let stats = &status.stats;
        let _ = write!(
            body,
            "<tr><th>pipeline</th><td>{pipeline}</td></tr>\
             <tr><th>instances busy / idle</th><td>{busy} / {idle}</td></tr>\
             <tr><th>backlog</th><td>{backlog}</td></tr>\
             <tr><th>records in / rows out</th><td>{records} / {rows}</td></tr>\
             <tr><th>dead letters</th><td>{dead}</td></tr>\
             <tr><th>cold starts (p50)</th><td>{cold} ({p50} ms)</td></tr>",
            pipeline = state_cell(&format!("{:?}", status.state).to_lowercase()),
            busy = status.instances.busy,
            idle = status.instances.idle,
            backlog = opt(status.backlog),
            records = stats.records_in,
            rows = stats.rows_out,
            dead = stats.dead_letters,
            cold = status.cold_starts.count,
            p50 = opt(status.cold_starts.p50_ms.map(|ms| format!("{ms:.0}"))),
        );
    }
    body.push_str("</tbody></table><h2>Recent invocations</h2>");
    if invocations.is_empty() {
        body.push_str("<p>No invocations recorded.</p>");
    } else {
        body.push_str(
            "<table><thead><tr><th>started</th><th>version</th><th>instance</th>\
             <th>outcome</th><th>duration</th><th>cold start</th><th>records in</th>\
             <th>rows out</th><th>rejected / dead letters</th><th>stderr tail</th></tr>\
             </thead><tbody>",
        );
        for invocation in &invocations {
            let started = u64::try_from(invocation.started_ms).map_or_else(
                |_| "-".to_owned(),
                |ms| {
                    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
                    humantime::format_rfc3339_millis(time).to_string()
                },
            );
            let cold = match (invocation.cold_start, invocation.init_ms) {
                (false, _) => "no".to_owned(),
                (true, None) => "yes".to_owned(),
                (true, Some(init)) => format!("yes (init {init} ms)"),
            };
            let _ = write!(
                body,
                "<tr><td>{started}</td><td>{version}</td><td>{instance}</td><td>{outcome}</td>\
                 <td>{duration} ms</td><td>{cold}</td><td>{records}</td><td>{rows}</td>\
                 <td>{rejected} / {dead}</td><td><pre>{stderr}</pre></td></tr>",
                version = invocation.version,
                instance = escape(&invocation.instance),
                outcome = state_cell(&invocation.outcome),
                duration = invocation.duration_ms,
                records = invocation.records_in,
                rows = invocation.rows_out,
                rejected = invocation.rejected,
                dead = invocation.dead_letters,
                stderr = escape(&invocation.stderr_tail),
            );
        }
        body.push_str("</tbody></table>");
    }
    page(&format!("Sluice: {name}"), true, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"y\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;y&quot;"
        );
        assert_eq!(percent_decode("a%3Ab%2Bc"), "a:b+c");
    }
}
