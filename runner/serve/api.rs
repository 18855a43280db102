//! The API of the process that holds the journal: runbooks, runs (start, inspect, follow,
//! approve, reject, resume, abort), schedules, and Prometheus metrics; its messages are the
//! structs of [`crate::wire`].
//!
//! It is served two ways. Over HTTP by `serve` ([`router`]): every `/api` route needs a bearer
//! token, a missing or wrong one gets 401 and changes nothing, and actions are recorded under
//! the token's name. Over the owner-only local socket of every holder ([`local_router`]):
//! the socket admits only processes of the holder's own user, and actions are recorded under
//! the name the command line acts as (`X-Runbook-As`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use futures_util::Stream;
use runbook_journals::{Event, Journal, JournalError, Record, RunId, RunState};
use serde::Deserialize;
use tokio::sync::broadcast;

use crate::engine::log::Observer;
use crate::engine::view::RunView;
use crate::engine::{EngineError, Resume};
use crate::failure::Kind;
use crate::resupply::Given;
use crate::schedule::scheduler::Scheduler;
use crate::schedule::state::{Fired, ScheduleState};
use crate::serve::auth::{ACT_AS, Identity, Tokens};
use crate::serve::filter::RunFilter;
use crate::serve::forward::{Forwarded, forward};
use crate::serve::live::LiveOutputs;
use crate::serve::metrics::Metrics;
use crate::serve::notify::Notice;
use crate::serve::runs::{Runs, RunsError, StartRequest, Verdict};
use crate::serve::web;
use crate::ui::report::run_detail;
use crate::wire::{
    AbortRun, Aborted, Accepted, Decide, ErrorBody, Happened, HolderInfo, ListedRun, OutputChunk,
    OwnerAction, OwnerAnswer, OwnerRequest, ParamError, ParamInfo, PauseRun, PausedRun, PlanRun,
    PlannedCheck, PlannedRun, PlannedStep, ResumeRun, RunDetail, RunRecord, RunbookInfo,
    ScheduleStatus, StartRun, Whoami,
};

/// Committed records, broadcast to live followers (the event streams), and the output of
/// running steps ([`LiveOutputs`]).
pub struct Bus {
    /// Shared, not copied, into the channel's slots: the channel allocates all of them up
    /// front, and a slot holding a whole record made each executor pay ~1 MiB at start.
    tx: broadcast::Sender<Arc<(RunId, Record)>>,
    output: LiveOutputs,
}

impl Bus {
    /// A bus keeping up to `capacity` records (and as many parts of output) for slow
    /// followers.
    pub fn new(capacity: usize) -> Arc<Self> {
        let (tx, _) = broadcast::channel(capacity);
        Arc::new(Self {
            tx,
            output: LiveOutputs::new(capacity),
        })
    }
}

impl Observer for Bus {
    fn record(&self, run: RunId, record: &Record) {
        self.output.record(run, record);
        // Copied only for followers: a `runbook run` that nobody follows pays nothing per record.
        if self.tx.receiver_count() > 0 {
            let _ = self.tx.send(Arc::new((run, record.clone())));
        }
    }

    fn wants_output(&self) -> bool {
        true
    }

    fn output(&self, chunk: &OutputChunk) {
        self.output.chunk(chunk);
    }
}

/// Everything the handlers share.
pub struct App {
    /// The runs.
    pub runs: Arc<Runs>,
    /// The tokens.
    pub tokens: Tokens,
    /// Live records.
    pub bus: Arc<Bus>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The schedules (`serve` only: a command-line holder fires none).
    pub scheduler: Option<Arc<Scheduler>>,
    /// What the holder is.
    pub holder: HolderInfo,
    /// Webhook notifications (their counters are metrics).
    pub notifier: Arc<crate::serve::notify::Notifier>,
}

impl App {
    fn journal(&self) -> &Arc<dyn Journal> {
        self.runs.journal()
    }

    fn scheduler(&self) -> ApiResult<&Arc<Scheduler>> {
        self.scheduler.as_ref().ok_or_else(|| {
            ApiError::new(
                Kind::Refused,
                format!(
                    "the journal is held by `runbook {}` (pid {}), which fires no schedules; try again once it has finished, or use `runbook serve`",
                    self.holder.command, self.holder.pid
                ),
            )
        })
    }
}

/// An API error: a kind (from which its status follows) and a message, sent as
/// [`ErrorBody`] (`{"error": …, "kind": …}`, and `params` for parameter values that are
/// missing, wrong or not allowed).
pub struct ApiError {
    kind: Kind,
    message: String,
    params: Vec<ParamError>,
}

impl ApiError {
    fn new(kind: Kind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            params: Vec::new(),
        }
    }

    /// A task that should have answered died (a panic): the server's fault.
    fn join(e: &tokio::task::JoinError) -> Self {
        Self::new(Kind::Failed, e.to_string())
    }

    fn status(&self) -> StatusCode {
        match self.kind {
            Kind::BadInput => StatusCode::BAD_REQUEST,
            Kind::NotFound => StatusCode::NOT_FOUND,
            Kind::Refused | Kind::LockHeld | Kind::NeedsDecision => StatusCode::CONFLICT,
            Kind::Unauthorized => StatusCode::UNAUTHORIZED,
            Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Kind::PrecheckFailed | Kind::Failed => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl ApiError {
    /// The body this error is answered with.
    pub(crate) fn into_body(self) -> ErrorBody {
        ErrorBody {
            error: self.message,
            kind: Some(self.kind),
            params: self.params,
        }
    }

    /// The error another executor answered with, as this API's.
    fn from_body(body: ErrorBody) -> Self {
        Self {
            kind: body.kind.unwrap_or(Kind::Failed),
            message: body.error,
            params: body.params,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        (status, Json(self.into_body())).into_response()
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let mut error = Self::new(Kind::of_engine(&e), e.to_string());
        if let EngineError::Params(problems) = &e {
            error.params = problems
                .iter()
                .map(|p| ParamError {
                    param: p.param.clone(),
                    error: p.message.clone(),
                })
                .collect();
        }
        error
    }
}

impl From<RunsError> for ApiError {
    fn from(e: RunsError) -> Self {
        match e {
            RunsError::Engine(e) => e.into(),
            other @ RunsError::Unavailable(_) => Self::new(other.kind(), other.to_string()),
        }
    }
}

impl From<JournalError> for ApiError {
    fn from(e: JournalError) -> Self {
        Self::new(Kind::of_journal(&e), e.to_string())
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The API's routes, below `/api/v1`.
fn api() -> Router<Arc<App>> {
    Router::new()
        .route("/whoami", get(whoami))
        .route("/holder", get(holder))
        .route("/runbooks", get(runbooks))
        .route("/plan", post(plan))
        .route("/runs", get(list_runs).post(start_run))
        .route("/runs/{id}", get(get_run))
        .route("/runs/{id}/records", get(get_records))
        .route("/runs/{id}/events", get(events))
        .route("/runs/{id}/approve", post(approve))
        .route("/runs/{id}/reject", post(reject))
        .route("/runs/{id}/resume", post(resume))
        .route("/runs/{id}/abort", post(abort))
        .route("/runs/{id}/pause", post(pause_run))
        .route("/runs/{id}/unpause", post(unpause_run))
        .route("/schedules", get(schedules))
        .route("/schedules/{name}/pause", post(pause))
        .route("/schedules/{name}/resume", post(unpause))
        .route("/schedules/{name}/trigger", post(trigger))
}

/// The HTTP router of `serve`: the API and metrics behind bearer tokens, and the web page.
pub fn router(app: Arc<App>) -> Router {
    let mut router = Router::new()
        .nest("/api/v1", api())
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(app.clone(), authenticate))
        .route("/", get(web::page))
        .route("/runs/{id}", get(web::page))
        .route("/new", get(web::page))
        .route("/app.js", get(web::script))
        .route("/runs/app.js", get(web::script))
        .route("/app.css", get(web::style))
        .route("/runs/app.css", get(web::style));
    // The catalogue and start form, a step's output, the timeline: their scripts.
    for &(name, text) in web::SCRIPTS {
        router = router
            .route(&format!("/{name}"), get(move || web::javascript(text)))
            .route(&format!("/runs/{name}"), get(move || web::javascript(text)));
    }
    // The run controls, history and schedules: their views and files.
    for view in web::VIEWS {
        router = router.route(view, get(web::page));
    }
    for (name, _, _) in web::ASSETS {
        let file = move || async move { web::asset(name) };
        router = router
            .route(&format!("/{name}"), get(file))
            .route(&format!("/runs/{name}"), get(file));
    }
    router
        .layer(middleware::map_response(web::security_headers))
        .with_state(app)
}

/// The router of the local socket: the API, for the command line of the holder's own user
/// (the socket refuses every other user), acting as whom it says.
pub fn local_router(app: Arc<App>) -> Router {
    Router::new()
        .nest("/api/v1", api())
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn(local_identity))
        .with_state(app)
}

/// Records who the command line acts as (its `--as`, or `$USER`).
async fn local_identity(mut request: Request, next: Next) -> Response {
    let name = request
        .headers()
        .get(ACT_AS)
        .and_then(|v| v.to_str().ok())
        .filter(|n| !n.is_empty())
        .unwrap_or("local")
        .to_owned();
    request.extensions_mut().insert(Identity { name });
    next.run(request).await
}

/// Rejects requests without a known bearer token (401, nothing changes) and records who
/// called.
async fn authenticate(State(app): State<Arc<App>>, mut request: Request, next: Next) -> Response {
    let headers = request.headers();
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let act_as = headers.get(ACT_AS).and_then(|v| v.to_str().ok());
    match token.and_then(|t| app.tokens.identify(t, act_as)) {
        Some(identity) => {
            request.extensions_mut().insert(identity);
            next.run(request).await
        }
        None => {
            let mut response = ApiError::new(
                Kind::Unauthorized,
                if token.is_some() {
                    "the bearer token is not known"
                } else {
                    "a bearer token is required (Authorization: Bearer …)"
                },
            )
            .into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                "Bearer".parse().expect("valid header"),
            );
            response
        }
    }
}

async fn whoami(Extension(who): Extension<Identity>) -> Json<Whoami> {
    Json(Whoami { name: who.name })
}

async fn holder(State(app): State<Arc<App>>) -> Json<HolderInfo> {
    Json(app.holder.clone())
}

/// `GET /runbooks`: what `serve` can run, with each runbook's parameter declarations (the
/// web page's catalogue and start form are built from them).
async fn runbooks(State(app): State<Arc<App>>) -> ApiResult<Json<Vec<RunbookInfo>>> {
    let runs = app.runs.clone();
    // Loading every runbook reads files: off the runtime's workers.
    let list = tokio::task::spawn_blocking(move || {
        let registry = runbook_steps::Registry::builtin();
        runs.library()
            .list()
            .into_iter()
            .map(|e| {
                let book = crate::engine::load_live(&e.origin, runs.library(), &registry, None);
                let (book, error) = match book {
                    Ok(b) => (Some(b), None),
                    Err(e) => (None, Some(e.to_string())),
                };
                RunbookInfo {
                    kind: if e.name.contains('/') {
                        "part"
                    } else {
                        "runbook"
                    }
                    .to_owned(),
                    name: e.name,
                    origin: crate::library::display_origin(&e.origin),
                    description: book.as_ref().and_then(|b| b.main().description.clone()),
                    params: book
                        .as_ref()
                        .map(|b| b.main().params.iter().map(ParamInfo::of).collect()),
                    error,
                }
            })
            .collect()
    })
    .await
    .map_err(|e| ApiError::join(&e))?;
    Ok(Json(list))
}

/// `POST /plan`: what a run would do — the parameters checked by the rules a start applies
/// (a problem names its parameter), the lock, the prechecks run read-only, each step rendered
/// as far as it can be — as `runbook plan` shows it. Nothing is journaled.
async fn plan(
    State(app): State<Arc<App>>,
    Extension(who): Extension<Identity>,
    Json(body): Json<PlanRun>,
) -> ApiResult<Json<PlannedRun>> {
    let runbook = app.runs.library().find_name(&body.runbook).map_err(|e| {
        ApiError::new(
            Kind::BadInput,
            format!("{e} (GET /api/v1/runbooks lists them)"),
        )
    })?;
    let params = crate::params::pairs_from_json(&body.params);
    let plan = app
        .runs
        .plan(&runbook, &params, &who.name, body.prechecks)
        .await?;
    Ok(Json(PlannedRun {
        runbook: plan.runbook,
        origin: plan.origin,
        params: plan.params,
        lock: plan.lock,
        lock_holder: plan.lock_holder,
        prechecks: plan
            .prechecks
            .into_iter()
            .map(|(id, result)| {
                let (status, error) = match result {
                    Some(Ok(())) => ("ok", None),
                    Some(Err(e)) => ("failed", Some(e)),
                    None => ("not-run", None),
                };
                PlannedCheck {
                    id,
                    status: status.to_owned(),
                    error,
                }
            })
            .collect(),
        steps: plan
            .steps
            .into_iter()
            .map(|(depth, path, text)| PlannedStep { depth, path, text })
            .collect(),
    }))
}

/// `GET /runs`: newest first, filtered as [`RunFilter`] says (a bad parameter is 400, naming it).
async fn list_runs(
    State(app): State<Arc<App>>,
    Query(q): Query<Vec<(String, String)>>,
) -> ApiResult<Json<Vec<ListedRun>>> {
    let filter = RunFilter::parse(&q).map_err(|e| ApiError::new(Kind::BadInput, e.to_string()))?;
    let listed = {
        let app = app.clone();
        tokio::task::spawn_blocking(move || -> Result<Vec<ListedRun>, JournalError> {
            // Damaged runs are listed as their summaries say; reading one reports its damage.
            let journal = app.journal();
            let runs = if filter.unfinished_only() {
                journal
                    .unfinished_runs()
                    .into_iter()
                    .rev()
                    .filter(|r| filter.matches(r))
                    .take(filter.limit)
                    .collect()
            } else {
                journal.newest_runs(
                    &|run| filter.could_match(run),
                    &mut |r| filter.matches(r),
                    filter.limit,
                )
            };
            let owners = owners(&app)?;
            Ok(runs
                .into_iter()
                .map(|summary| {
                    let owner = owners.get(&summary.id).cloned();
                    ListedRun {
                        active: executing(&app, &summary.id, summary.state, owner.as_ref()),
                        owner,
                        summary,
                    }
                })
                .collect())
        })
        .await
        .map_err(|e| ApiError::join(&e))??
    };
    Ok(Json(listed))
}

/// The owner of every owned run, on a journal shared by several executors (none otherwise).
fn owners(app: &App) -> Result<HashMap<RunId, String>, JournalError> {
    match app.runs.member() {
        Some(member) => Ok(member.fleet().owners()?.into_iter().collect()),
        None => Ok(HashMap::new()),
    }
}

/// Whether run `id` in `state` executes right now: here, or in the executor that owns it.
fn executing(app: &App, id: &RunId, state: RunState, owner: Option<&String>) -> bool {
    app.runs.is_active(*id)
        || (owner.is_some() && matches!(state, RunState::Running | RunState::Sleeping))
}

async fn start_run(
    State(app): State<Arc<App>>,
    Extension(who): Extension<Identity>,
    Json(body): Json<StartRun>,
) -> ApiResult<(StatusCode, Json<Accepted>)> {
    // A caller names a runbook of the library; a path would let any token holder run any
    // YAML file the server can read.
    let runbook = app.runs.library().find_name(&body.runbook).map_err(|e| {
        ApiError::new(
            Kind::BadInput,
            format!("{e} (GET /api/v1/runbooks lists them)"),
        )
    })?;
    let params = crate::params::pairs_from_json(&body.params);
    let runs = app.runs.clone();
    let id = tokio::task::spawn_blocking(move || {
        runs.start(&StartRequest {
            runbook,
            params,
            who: who.name,
            yes: body.yes,
        })
    })
    .await
    .map_err(|e| ApiError::join(&e))??;
    // Everything the run journals from now on comes after its creation: a follower may take
    // any park as the run's.
    Ok((
        StatusCode::CREATED,
        Json(Accepted {
            run: id,
            since: 0,
            approved: None,
            log: app.runs.log_path(id),
        }),
    ))
}

async fn get_run(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> ApiResult<Json<RunDetail>> {
    let id = app.journal().resolve(&id)?;
    let records = app.journal().read(id)?;
    let view =
        RunView::from_records(id, &records).map_err(|e| ApiError::from(EngineError::from(e)))?;
    let mut detail = run_detail(&view);
    detail.owner = match app.runs.member() {
        Some(member) => {
            let member = member.clone();
            let id = view.id;
            tokio::task::spawn_blocking(move || member.owner(id))
                .await
                .map_err(|e| ApiError::join(&e))??
        }
        None => None,
    };
    detail.active = Some(executing(&app, &view.id, view.state, detail.owner.as_ref()));
    detail.happened = Notice::of_records(&records)
        .into_iter()
        .map(|n| Happened {
            event: n.event.as_str().to_owned(),
            at: n.at,
            step: n.step.clone(),
            text: n.text(str::to_owned),
        })
        .collect();
    Ok(Json(detail))
}

#[derive(Deserialize)]
struct AfterQuery {
    #[serde(default)]
    after: u64,
}

async fn get_records(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(q): Query<AfterQuery>,
) -> ApiResult<Json<Vec<RunRecord>>> {
    let id = app.journal().resolve(&id)?;
    let records = app.journal().read_after(id, q.after)?;
    Ok(Json(
        records
            .into_iter()
            .map(|record| RunRecord { run: id, record })
            .collect(),
    ))
}

/// Whether a record ends what a follower waits for: the run ended or stopped for a person.
fn settles(record: &Record) -> bool {
    matches!(&record.event, Event::StateChanged { state, .. } if state.is_settled())
}

#[derive(Deserialize)]
struct EventsQuery {
    /// Keep following past a park (waiting, needs-attention, interrupted) until the run ends.
    #[serde(default)]
    until_end: bool,
    /// The follower acted on the run (started, approved, resumed it) when its last record was
    /// this one (the `since` of that action's answer): a park journaled after it ends the stream
    /// even when it was journaled before the follower came.
    #[serde(default)]
    since: Option<u64>,
    /// Also send the output of running steps as it is read (`output` events, [`OutputChunk`]):
    /// first what running steps printed so far, then each part as it comes.
    #[serde(default)]
    output: bool,
}

/// A live stream of a run's records (server-sent events): every record so far, then each new
/// one as it commits, until the run ends (or parks, unless `until_end`). A park already
/// journaled counts only after `since`: before it, the run was parked where the follower's own
/// action took it on from.
async fn events(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let id = app.journal().resolve(&id)?;
    // Subscribe before reading, so nothing committed in between is missed.
    let rx = app.bus.tx.subscribe();
    let output = q.output.then(|| app.bus.output.subscribe());
    let records = app.journal().read(id)?;
    let last = records.last().map_or(0, |r| r.seq);
    // The last state counts: a failed run taken up again goes on after its first end.
    let done_already = records
        .iter()
        .rev()
        .find_map(|r| match &r.event {
            Event::StateChanged { state, .. } => Some(state.is_terminal()),
            _ => None,
        })
        .unwrap_or(false);
    let until_end = q.until_end;
    let parked_since = !until_end
        && q.since.is_some_and(|since| {
            records
                .iter()
                .rev()
                .find(|r| matches!(&r.event, Event::StateChanged { .. }))
                .is_some_and(|r| r.seq > since && settles(r))
        });
    let mut initial: Vec<SseEvent> = records.iter().map(|r| sse(id, r)).collect();
    if q.output {
        // Parts that come meanwhile are sent again: a follower places a part by its offset.
        initial.extend(app.bus.output.tails(id).iter().map(sse_output));
    }
    // On a shared journal the run may execute in another executor, whose records reach this
    // one only through the store: read them from there too.
    let store = app.runs.member().map(|_| app.journal().clone());
    let live = futures_util::stream::unfold(
        Follow {
            rx,
            output,
            last,
            done: done_already || parked_since,
            store,
            queue: std::collections::VecDeque::new(),
        },
        move |mut f| async move {
            loop {
                if f.done {
                    return None;
                }
                let received = if let Some(record) = f.queue.pop_front() {
                    Ok((id, record))
                } else {
                    match &mut f.output {
                        Some(output) => tokio::select! {
                            biased;
                            record = next_record(&mut f.rx, f.store.as_ref(), &mut f.queue, f.last, id) => {
                                match record {
                                    Some(record) => record,
                                    None => continue,
                                }
                            }
                            chunk = output.recv() => {
                                match chunk {
                                    Ok(chunk) if chunk.run == id => {
                                        return Some((sse_output(&chunk), f));
                                    }
                                    // Another run's part; or parts missed: the follower sees the
                                    // gap in the offsets, and the step's journaled output comes
                                    // with its outcome.
                                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                                    Err(broadcast::error::RecvError::Closed) => f.output = None,
                                }
                                continue;
                            }
                        },
                        None => {
                            match next_record(&mut f.rx, f.store.as_ref(), &mut f.queue, f.last, id)
                                .await
                            {
                                Some(record) => record,
                                None => continue,
                            }
                        }
                    }
                };
                match received {
                    Ok((run, record)) if run == id && record.seq > f.last => {
                        f.last = record.seq;
                        let ends = matches!(&record.event, Event::StateChanged { state, .. } if state.is_terminal())
                            || (!until_end && settles(&record));
                        f.done = ends;
                        return Some((sse(id, &record), f));
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Too slow: tell the follower to reload rather than silently skip.
                        f.done = true;
                        return Some((SseEvent::default().event("lagged").data("{}"), f));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    );
    let stream = futures_util::StreamExt::map(
        futures_util::StreamExt::chain(futures_util::stream::iter(initial), live),
        Ok,
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// How often a follower on a shared journal reads the run's new records from the store.
const STORE_POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// Where a live event stream stands.
struct Follow {
    rx: broadcast::Receiver<Arc<(RunId, Record)>>,
    /// Parts of running steps' output, when the follower asked for them.
    output: Option<broadcast::Receiver<Arc<OutputChunk>>>,
    last: u64,
    done: bool,
    /// The shared journal to read records written by other executors from.
    store: Option<Arc<dyn Journal>>,
    /// Records read from the store, not yet sent.
    queue: std::collections::VecDeque<Record>,
}

/// The next record committed here, or `None` once records of the run read from the shared
/// journal `store` (written by other executors) are queued (or none came).
async fn next_record(
    rx: &mut broadcast::Receiver<Arc<(RunId, Record)>>,
    store: Option<&Arc<dyn Journal>>,
    queue: &mut std::collections::VecDeque<Record>,
    after: u64,
    id: RunId,
) -> Option<Result<(RunId, Record), broadcast::error::RecvError>> {
    let Some(store) = store.cloned() else {
        return Some(rx.recv().await.map(Arc::unwrap_or_clone));
    };
    tokio::select! {
        got = rx.recv() => Some(got.map(Arc::unwrap_or_clone)),
        () = tokio::time::sleep(STORE_POLL) => {
            if let Ok(Ok(records)) =
                tokio::task::spawn_blocking(move || store.read_after(id, after)).await
            {
                queue.extend(records);
            }
            None
        }
    }
}

fn sse_output(chunk: &OutputChunk) -> SseEvent {
    SseEvent::default()
        .event("output")
        .data(serde_json::to_string(chunk).expect("output serializes"))
}

fn sse(run: RunId, record: &Record) -> SseEvent {
    SseEvent::default()
        .event("record")
        .id(record.seq.to_string())
        .data(serde_json::to_string(&RunRecord { run, record }).expect("records serialize"))
}

/// The sequence number of run `id`'s last record (0 for none): where an action on the run
/// starts, for a follower's `since`.
fn last_seq(app: &App, id: RunId) -> ApiResult<u64> {
    Ok(app.journal().read(id)?.last().map_or(0, |r| r.seq))
}

async fn decide(
    app: Arc<App>,
    who: Identity,
    id: String,
    body: Decide,
    approved: bool,
) -> ApiResult<(StatusCode, Json<Accepted>)> {
    let id = app.journal().resolve(&id)?;
    let action = if approved {
        OwnerAction::Approve(body.clone())
    } else {
        OwnerAction::Reject(body.clone())
    };
    if let Some(answer) = elsewhere(&app, id, &who.name, action).await {
        return answered(answer, |a| match a {
            OwnerAnswer::Accepted(a) => Some((StatusCode::ACCEPTED, Json(a))),
            _ => None,
        });
    }
    let since = last_seq(&app, id)?;
    let runs = app.runs.clone();
    tokio::task::spawn_blocking(move || {
        let params = crate::params::pairs_from_json(&body.params);
        runs.decide(
            id,
            Verdict {
                approved,
                step: body.step,
                comment: body.comment,
            },
            &params,
            &who.name,
        )
    })
    .await
    .map_err(|e| ApiError::join(&e))??;
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            run: id,
            since,
            approved: Some(approved),
            log: app.runs.log_path(id),
        }),
    ))
}

async fn approve(
    State(app): State<Arc<App>>,
    Extension(who): Extension<Identity>,
    Path(id): Path<String>,
    body: Option<Json<Decide>>,
) -> ApiResult<(StatusCode, Json<Accepted>)> {
    decide(app, who, id, body.map(|b| b.0).unwrap_or_default(), true).await
}

async fn reject(
    State(app): State<Arc<App>>,
    Extension(who): Extension<Identity>,
    Path(id): Path<String>,
    body: Option<Json<Decide>>,
) -> ApiResult<(StatusCode, Json<Accepted>)> {
    decide(app, who, id, body.map(|b| b.0).unwrap_or_default(), false).await
}

async fn resume(
    State(app): State<Arc<App>>,
    Extension(who): Extension<Identity>,
    Path(id): Path<String>,
    body: Option<Json<ResumeRun>>,
) -> ApiResult<(StatusCode, Json<Accepted>)> {
    let body = body.map(|b| b.0).unwrap_or_default();
    resume_with(app, who, id, body).await
}

/// `POST /runs/{id}/unpause`: a resume of a paused run.
async fn unpause_run(
    State(app): State<Arc<App>>,
    Extension(who): Extension<Identity>,
    Path(id): Path<String>,
    body: Option<Json<ResumeRun>>,
) -> ApiResult<(StatusCode, Json<Accepted>)> {
    let body = body.map(|b| b.0).unwrap_or_default();
    resume_with(
        app,
        who,
        id,
        ResumeRun {
            unpause: true,
            ..body
        },
    )
    .await
}

async fn resume_with(
    app: Arc<App>,
    who: Identity,
    id: String,
    body: ResumeRun,
) -> ApiResult<(StatusCode, Json<Accepted>)> {
    let id = app.journal().resolve(&id)?;
    if let Some(answer) = elsewhere(&app, id, &who.name, OwnerAction::Resume(body.clone())).await {
        return answered(answer, |a| match a {
            OwnerAnswer::Accepted(a) => Some((StatusCode::ACCEPTED, Json(a))),
            _ => None,
        });
    }
    let req = Resume {
        retry_step: body.retry_step,
        skip_step: body.skip_step,
        reload: body.reload,
        params: Given::now(crate::params::pairs_from_json(&body.params)),
        accept_loss: body.accept_loss,
        unpause: body.unpause,
        comment: body.comment,
    };
    let since = last_seq(&app, id)?;
    let runs = app.runs.clone();
    tokio::task::spawn_blocking(move || runs.resume(id, &req, &who.name))
        .await
        .map_err(|e| ApiError::join(&e))??;
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            run: id,
            since,
            approved: None,
            log: app.runs.log_path(id),
        }),
    ))
}

async fn abort(
    State(app): State<Arc<App>>,
    Extension(who): Extension<Identity>,
    Path(id): Path<String>,
    body: Option<Json<AbortRun>>,
) -> ApiResult<Json<Aborted>> {
    let id = app.journal().resolve(&id)?;
    let body = body.map(|b| b.0).unwrap_or_default();
    if let Some(answer) = elsewhere(&app, id, &who.name, OwnerAction::Abort(body.clone())).await {
        return answered(answer, |a| match a {
            OwnerAnswer::Aborted(a) => Some(Json(a)),
            _ => None,
        });
    }
    app.runs
        .abort(id, body.reason, body.no_cleanup, &who.name)
        .await?;
    Ok(Json(Aborted {
        run: id,
        state: runbook_journals::RunState::Aborted,
        reason: app.journal().summary(id).ok().and_then(|s| s.reason),
    }))
}

/// `POST /runs/{id}/pause`: the run stops at its next step boundary.
async fn pause_run(
    State(app): State<Arc<App>>,
    Extension(who): Extension<Identity>,
    Path(id): Path<String>,
    body: Option<Json<PauseRun>>,
) -> ApiResult<Json<PausedRun>> {
    let id = app.journal().resolve(&id)?;
    let comment = body.and_then(|b| b.0.comment);
    let action = OwnerAction::Pause(PauseRun {
        comment: comment.clone(),
    });
    if let Some(answer) = elsewhere(&app, id, &who.name, action).await {
        return answered(answer, |a| match a {
            OwnerAnswer::Paused(p) => Some(Json(p)),
            _ => None,
        });
    }
    let state = app.runs.pause(id, comment, &who.name).await?;
    Ok(Json(PausedRun {
        run: id,
        state,
        reason: app.journal().summary(id).ok().and_then(|s| s.reason),
    }))
}

/// On a journal shared by several executors: sends `action` on run `id`, decided by `who`, to
/// the executor that owns the run and returns its answer — or `None` when the action is to be
/// done here (this executor owns the run, took it now, or the journal is not shared).
async fn elsewhere(app: &App, id: RunId, who: &str, action: OwnerAction) -> Option<OwnerAnswer> {
    let member = app.runs.member()?;
    let request = OwnerRequest {
        run: id,
        who: who.to_owned(),
        action,
    };
    match forward(member, app.journal(), &request).await {
        Forwarded::Here => None,
        Forwarded::Answer(answer) => Some(answer),
    }
}

/// The owner's answer as this API's: what `pick` takes from it, or its error (of its kind).
fn answered<T>(answer: OwnerAnswer, pick: impl FnOnce(OwnerAnswer) -> Option<T>) -> ApiResult<T> {
    match answer {
        OwnerAnswer::Error(body) => Err(ApiError::from_body(body)),
        other => {
            let shown = format!("{other:?}");
            pick(other).ok_or_else(|| {
                ApiError::new(
                    Kind::Failed,
                    format!("the owner of the run answered something else than asked: {shown}"),
                )
            })
        }
    }
}

fn no_schedule(name: &str) -> ApiError {
    ApiError::new(Kind::NotFound, format!("no schedule `{name}`"))
}

async fn schedules(State(app): State<Arc<App>>) -> ApiResult<Json<Vec<ScheduleStatus>>> {
    let journal = app.journal();
    let list: ApiResult<Vec<ScheduleStatus>> = app
        .scheduler()?
        .schedules()
        .iter()
        .map(|s| {
            let st = ScheduleState::load(journal.as_ref(), &s.name)?;
            Ok(crate::schedule::status(s, &st, journal.as_ref()))
        })
        .collect();
    Ok(Json(list?))
}

fn set_paused(app: &App, name: &str, paused: bool) -> ApiResult<Json<ScheduleStatus>> {
    let scheduler = app.scheduler()?;
    let s = scheduler.get(name).ok_or_else(|| no_schedule(name))?;
    let st = scheduler.set_paused(name, paused)?;
    Ok(Json(crate::schedule::status(
        s,
        &st,
        app.journal().as_ref(),
    )))
}

// The schedule actions take no body, but read any sent: a body left unread ends the
// connection, and a client that reuses it (keep-alive) finds it closed under its next request.
async fn pause(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    _body: axum::body::Bytes,
) -> ApiResult<Json<ScheduleStatus>> {
    set_paused(&app, &name, true)
}

async fn unpause(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    _body: axum::body::Bytes,
) -> ApiResult<Json<ScheduleStatus>> {
    set_paused(&app, &name, false)
}

async fn trigger(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    _body: axum::body::Bytes,
) -> ApiResult<Json<Fired>> {
    let scheduler = app.scheduler()?.clone();
    let fired = tokio::task::spawn_blocking(move || {
        let s = scheduler.get(&name).ok_or_else(|| no_schedule(&name))?;
        scheduler.trigger(s).map_err(ApiError::from)
    })
    .await
    .map_err(|e| ApiError::join(&e))??;
    Ok(Json(fired))
}

async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    app.metrics
        .set_notifications(app.notifier.delivered(), app.notifier.failed());
    (
        [(header::CONTENT_TYPE, crate::serve::metrics::CONTENT_TYPE)],
        app.metrics.render(app.journal().as_ref()),
    )
}
