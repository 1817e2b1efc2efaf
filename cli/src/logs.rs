//! `zedops logs`: a container's output, stdout to stdout and stderr to stderr, like `docker
//! logs`; with `-f` it follows, printing lines as they arrive, until the container stops or
//! Ctrl-C (which ends the stream on the agent; the exit code is 0).

use std::io::Write;

use zedops_client::{Client, ClientError, EndReason, LogEvent, LogLine, LogsOptions};

use crate::args::{ClientOpts, LogsArgs, Output};
use crate::output::print_json;

pub async fn logs(c: &Client, o: &ClientOpts, a: &LogsArgs, agent: &str) -> anyhow::Result<()> {
    let opts = LogsOptions {
        tail: a.tail,
        timestamps: a.timestamps,
        since: a.since.clone(),
        timeout_s: None,
    };
    if a.follow {
        return follow(c, o, a, agent, &opts).await;
    }
    let logs = c.logs(agent, &a.container, &opts).await?;
    if o.output == Output::Json {
        print_json(&logs);
        return Ok(());
    }
    print_lines(&logs.lines, false);
    Ok(())
}

async fn follow(
    c: &Client,
    o: &ClientOpts,
    a: &LogsArgs,
    agent: &str,
    opts: &LogsOptions,
) -> anyhow::Result<()> {
    let mut stream = c.follow_logs(agent, &a.container, opts).await?;
    let json = o.output == Output::Json;
    loop {
        let event = tokio::select! {
            // Ctrl-C: dropping the stream closes the connection, which cancels it on the agent.
            _ = tokio::signal::ctrl_c() => return Ok(()),
            e = stream.next() => e,
        };
        match event {
            None => anyhow::bail!(
                "the server closed the stream of {} without its end",
                a.container
            ),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(LogEvent::Lines(chunk))) => print_lines(&chunk.lines, json),
            Some(Ok(LogEvent::End(end))) => {
                return match (end.reason, end.error) {
                    (_, Some(body)) => Err(ClientError::Api {
                        status: body.code.http_status(),
                        body,
                    }
                    .into()),
                    (EndReason::Eof, None) => Ok(()),
                    (reason, None) => anyhow::bail!("the stream ended: {}", reason.as_str()),
                };
            }
        }
    }
}

/// Prints lines to stdout and stderr as the container wrote them (one JSON object per line with
/// `json`), flushed at once.
fn print_lines(lines: &[LogLine], json: bool) {
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    for l in lines {
        if json {
            let _ = writeln!(out, "{}", serde_json::to_string(l).unwrap_or_default());
        } else if l.stream == "stderr" {
            let _ = writeln!(err, "{}", l.text);
        } else {
            let _ = writeln!(out, "{}", l.text);
        }
    }
    let _ = out.flush();
}
