//! `warmpoolctl`: the operator's command line for a warmpool daemon.
//!
//! Parses flags (`cli`), makes one call through `warmpool_client::Client`,
//! and prints the answer as a table (`table`) or JSON (`output`); `watch`
//! streams. Errors go to stderr as `error: <CODE>: <message>` with a
//! non-zero exit status. An Allocate answered in any state but ALLOCATED
//! (an order released or being released, or one this client does not
//! know) prints that answer, warns on stderr and exits non-zero.

mod cli;
mod output;
mod table;
mod watch;

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches};
use serde_json::Value;
use warmpool_client::{api, Client, ClientError};

use cli::{Cli, Command, OutputFormat, PoolsCommand};
use output::{to_json, AllocationView, PoolView};

// A CLI makes one call at a time: a single-threaded runtime starts faster
// and is all it needs.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let matches = cli::try_matches_from(std::env::args_os()).unwrap_or_else(|e| e.exit());
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let token = cli::token_source(&cli, &matches).unwrap_or_else(|e| e.exit());
    let (endpoint, has_certificate) = (cli.endpoint.clone(), cli.cert_file.is_some());
    let allocating = match &cli.command {
        Command::Allocate(args) => Some(args.request_id.clone()),
        _ => None,
    };
    match run(cli, token).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if let Some(unusable) = err.downcast_ref::<NoServerToUse>() {
                eprintln!("warning: {unusable}");
                return ExitCode::FAILURE;
            }
            let described = describe(&err);
            eprintln!("error: {described}");
            let answered = err.downcast_ref::<watch::BrokeAfterAnswers>().is_some();
            let handshake_answered = answered || err.downcast_ref::<AfterHandshake>().is_some();
            // Only a failed call to the daemon gets a hint about the
            // connection: a failed write to stdout may read "Broken pipe"
            // too, as a connection the daemon cut off does.
            let from_daemon = answered || err.downcast_ref::<ClientError>().is_some();
            let hint = cli::hint(
                &described,
                &endpoint,
                has_certificate,
                allocating.as_deref(),
                handshake_answered,
            );
            if let Some(hint) = hint.filter(|_| from_daemon) {
                eprintln!("hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}

/// One line for the user. A ClientError already reads as `CODE: message` or
/// `cannot connect to <endpoint>: <cause>`; anything else gets its whole
/// context chain. A server's message may quote a cloud's fault text:
/// control characters in it are shown escaped, not sent to the terminal.
fn describe(err: &anyhow::Error) -> String {
    let text = match err.downcast_ref::<ClientError>() {
        Some(client_err) => client_err.to_string(),
        None => format!("{err:#}"),
    };
    table::one_line(&text)
}

/// Allocate answered in a state other than ALLOCATED: the order's released
/// allocation (its id was used before), one being released, or a state no
/// server gives a finished Allocate (ALLOCATING, UNSPECIFIED, one newer
/// than this client). The answer is no server to use, and a script going
/// on (`warmpoolctl allocate ... && provision`) would provision one that
/// is gone or not yet there.
#[derive(Debug, thiserror::Error)]
#[error("order {request_id} {state}")]
struct NoServerToUse {
    request_id: String,
    state: String,
}

impl NoServerToUse {
    /// `None` for an ALLOCATED answer, the one with a server to use.
    fn of(answer: &api::Allocation) -> Option<NoServerToUse> {
        let id = &answer.request_id;
        let state = match api::AllocationState::try_from(answer.state) {
            Ok(api::AllocationState::Allocated) => return None,
            Ok(api::AllocationState::Released) => {
                "was already released; its server is gone. A new purchase needs a new \
                 --request-id"
                    .to_owned()
            }
            Ok(api::AllocationState::Releasing) => {
                "is being released; its server is being deleted. A new purchase needs a new \
                 --request-id"
                    .to_owned()
            }
            Ok(_) => format!(
                "is {}, not ALLOCATED: it has no server to use. Look at it again with \
                 `warmpoolctl get {id}`",
                output::allocation_state(answer.state)
            ),
            Err(_) => format!(
                "is {}, not ALLOCATED, a state this warmpoolctl does not know: take it as no \
                 server to use, and look at it with a newer warmpoolctl (`warmpoolctl get {id}`)",
                output::allocation_state(answer.state)
            ),
        };
        Some(NoServerToUse {
            request_id: id.clone(),
            state,
        })
    }
}

/// Marks a call's error when the daemon had answered the handshake of the
/// connection it failed on: the connection's setup (TLS, the port) was not
/// the cause, whatever the error reads.
#[derive(Debug, thiserror::Error)]
#[error("the daemon had answered the connection's handshake")]
struct AfterHandshake;

/// What a command prints: the same answer in either format.
struct Rendered {
    table: String,
    json: Value,
}

async fn run(cli: Cli, token: cli::TokenSource) -> anyhow::Result<()> {
    // Check arguments that clap cannot before connecting, so a typo is
    // reported as such even when the server is down.
    let command = cli.command;
    let prepared = Prepared::from_command(command)?;
    if let Prepared::Completions(shell) = prepared {
        return completions(shell);
    }

    // Files holding a secret every user of the host may read (the token,
    // the client key) are worth a warning, not a refusal.
    let warn_if_world_readable = |path: &std::path::Path| {
        if let Some(warning) = warmpool_proto::secret_file::world_readable(path) {
            eprintln!("warning: {warning}");
        }
    };
    let token = match token {
        cli::TokenSource::File(path) => {
            let token = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read the token file {}", path.display()))?;
            warn_if_world_readable(&path);
            Some(token)
        }
        cli::TokenSource::Literal(token) => Some(token),
        cli::TokenSource::None => None,
    };
    // Read before connecting: a bad token file is reported as such even
    // when the server is down.
    let token = token
        .map(|token| warmpool_client::BearerToken::new(&token))
        .transpose()?;
    cli::check_token_transport(&cli.endpoint, token.is_some())?;
    let read = |what: &str, path: &std::path::Path| {
        std::fs::read(path).with_context(|| format!("cannot read the {what} {}", path.display()))
    };
    let tls = warmpool_client::TlsOptions {
        ca_pem: cli
            .ca_file
            .as_deref()
            .map(|path| read("CA file", path))
            .transpose()?,
        identity_pem: match (&cli.cert_file, &cli.key_file) {
            (Some(cert), Some(key)) => {
                let pair = (read("certificate file", cert)?, read("key file", key)?);
                warn_if_world_readable(key);
                Some(pair)
            }
            _ => None,
        },
        files: warmpool_client::TlsFiles {
            ca: cli.ca_file.clone(),
            cert: cli.cert_file.clone(),
            key: cli.key_file.clone(),
        },
    };
    let options = warmpool_client::ConnectOptions {
        tls,
        ..Default::default()
    };
    let mut client = Client::connect_with(&cli.endpoint, options).await?;
    if let Some(token) = token {
        client = client.authorized(token)?;
    }
    let called = call(&client, prepared, cli.output).await;
    called.map_err(|err| {
        if err.is::<ClientError>() && client.handshake_answered() {
            err.context(AfterHandshake)
        } else {
            err
        }
    })
}

/// Makes the command's call and prints its answer.
async fn call(client: &Client, prepared: Prepared, output: OutputFormat) -> anyhow::Result<()> {
    let mut unusable = None;
    let rendered = match prepared {
        Prepared::ListPools => {
            let pools = client.list_pools().await?;
            Rendered {
                table: table::pools_table(&pools, std::time::SystemTime::now()),
                json: output::pools_json(&pools),
            }
        }
        Prepared::GetPool(key) => pool(client.get_pool(key.flavor, key.az).await?),
        Prepared::CreatePool(key, spec) => {
            changed_pool(client.create_pool(key.flavor, key.az, spec).await?)
        }
        Prepared::UpdatePool(key, spec, mask) => {
            changed_pool(client.update_pool(key.flavor, key.az, spec, mask).await?)
        }
        Prepared::DeletePool(key) => pool(client.delete_pool(key.flavor, key.az).await?),
        Prepared::Instances(args) => {
            let instances = client
                .list_instances(args.flavor.unwrap_or_default(), args.az.unwrap_or_default())
                .await?;
            Rendered {
                table: table::instances_table(&instances),
                json: output::instances_json(&instances),
            }
        }
        Prepared::Allocate(request) => {
            let answer = client.allocate(request).await?;
            unusable = NoServerToUse::of(&answer);
            allocation(answer)
        }
        Prepared::Get(request_id) => allocation(client.get_allocation(request_id).await?),
        Prepared::Release(request_id, delete_volume) => {
            allocation(client.release(request_id, delete_volume).await?)
        }
        Prepared::Watch => return watch::run(client, output).await,
        Prepared::Completions(_) => unreachable!("answered before connecting"),
    };

    let text = match output {
        OutputFormat::Table => rendered.table,
        OutputFormat::Json => serde_json::to_string_pretty(&rendered.json)? + "\n",
    };
    // write_all rather than print!, which panics on a closed pipe. A
    // reader that left (`| head`) is no failure, but an order with no
    // server to use still ends non-zero: a script reads the exit code.
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if reader_left(&e) => {}
        written => written?,
    }
    match unusable {
        Some(unusable) => Err(unusable.into()),
        None => Ok(()),
    }
}

/// Writes the completion script for `shell` to stdout; needs no server.
fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "warmpoolctl", &mut script);
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(&script).and_then(|()| stdout.flush()) {
        Err(e) if reader_left(&e) => Ok(()),
        written => Ok(written?),
    }
}

/// Whether a write to stdout failed because its reader has gone
/// (`warmpoolctl watch | head`): it took what it wanted, so the command
/// ends as done, quietly, rather than with "Broken pipe" as an error.
fn reader_left(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::BrokenPipe
}

fn pool(pool: api::Pool) -> Rendered {
    Rendered {
        table: table::pool_detail(&pool, std::time::SystemTime::now()),
        json: to_json(PoolView::from(&pool)),
    }
}

/// A pool created or changed: answered before its next step plans for it
/// ([`table::changed_pool_detail`]).
fn changed_pool(pool: api::Pool) -> Rendered {
    Rendered {
        table: table::changed_pool_detail(&pool, std::time::SystemTime::now()),
        json: to_json(PoolView::from(&pool)),
    }
}

fn allocation(allocation: api::Allocation) -> Rendered {
    Rendered {
        table: table::allocation_detail(&allocation),
        json: to_json(AllocationView::from(&allocation)),
    }
}

/// A command with its request already built and validated.
enum Prepared {
    ListPools,
    GetPool(cli::PoolKey),
    CreatePool(cli::PoolKey, api::PoolSpec),
    UpdatePool(cli::PoolKey, api::PoolSpec, Vec<String>),
    DeletePool(cli::PoolKey),
    Instances(cli::InstancesArgs),
    Allocate(api::AllocateRequest),
    Get(String),
    Release(String, Option<bool>),
    Watch,
    Completions(clap_complete::Shell),
}

impl Prepared {
    fn from_command(command: Command) -> anyhow::Result<Prepared> {
        Ok(match command {
            Command::Pools { command } => match command.unwrap_or(PoolsCommand::List) {
                PoolsCommand::List => Prepared::ListPools,
                PoolsCommand::Get(key) => Prepared::GetPool(key),
                PoolsCommand::Create(args) => {
                    let spec = args.to_spec()?;
                    Prepared::CreatePool(args.key, spec)
                }
                PoolsCommand::Update(args) => {
                    let (spec, mask) = args.to_update()?;
                    Prepared::UpdatePool(args.key, spec, mask)
                }
                PoolsCommand::Delete(key) => Prepared::DeletePool(key),
            },
            Command::Instances(args) => Prepared::Instances(args),
            Command::Allocate(args) => Prepared::Allocate(args.to_request()?),
            Command::Get { request_id } => Prepared::Get(request_id),
            Command::Release(args) => {
                let delete_volume = args.delete_volume();
                Prepared::Release(args.request_id, delete_volume)
            }
            Command::Watch => Prepared::Watch,
            Command::Completions { shell } => Prepared::Completions(shell),
        })
    }
}
