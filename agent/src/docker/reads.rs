//! Reads: the container list, one container's row, inspect, logs.

use super::*;

impl Driver {
    /// `docker ps` (`all` adds stopped containers), sorted by name.
    pub async fn list(&self, all: bool) -> Result<Vec<Container>, DriverError> {
        let opts = ListContainersOptionsBuilder::default().all(all).build();
        let mut out = self.rows(opts).await?;
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// One container's list row, by full ID.
    pub async fn row(&self, id: &str) -> Result<Container, DriverError> {
        let filters = HashMap::from([("id", vec![id])]);
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        self.rows(opts)
            .await?
            .into_iter()
            .find(|c| c.id == id)
            .ok_or_else(|| {
                DriverError::NotFound(format!(
                    "container {id} disappeared from agent {}",
                    self.agent
                ))
            })
    }

    /// The rows Docker lists with `opts`, converted (rows without an ID are left out).
    async fn rows(
        &self,
        opts: bollard::query_parameters::ListContainersOptions,
    ) -> Result<Vec<Container>, DriverError> {
        let docker = self.docker()?;
        let list = docker.list_containers(Some(opts));
        let rows = self.call("list containers", CALL_TIMEOUT, list).await?;
        Ok(rows.into_iter().filter_map(from_summary).collect())
    }

    pub async fn inspect(&self, r: &ContainerRef) -> Result<ContainerDetail, DriverError> {
        let (target, ins) = self.resolve_inspect(r).await?;
        let ins = match ins {
            Some(i) => i,
            None => {
                let docker = self.docker()?;
                self.call(
                    "inspect the container",
                    CALL_TIMEOUT,
                    docker.inspect_container(&target.id, None::<InspectContainerOptions>),
                )
                .await?
            }
        };
        let row = self.row(&target.id).await?;
        Ok(detail(row, ins))
    }

    /// The lines `q` asks for, bounded to `max_bytes` (oldest lines dropped first).
    pub async fn logs(
        &self,
        t: &Resolved,
        q: &LogQuery,
        max_bytes: usize,
    ) -> Result<Logs, DriverError> {
        let mut stream = self.log_lines(t, q, false)?;
        let collect = async {
            let mut lines = std::collections::VecDeque::new();
            let mut bytes = 0usize;
            let mut truncated = false;
            while let Some(item) = stream.next().await {
                let Some(line) = item? else { continue };
                // The encoded size counts: JSON escaping grows control characters up to 6×.
                bytes += LogLine::encoded_len(&line.stream, &line.text);
                lines.push_back(line);
                while bytes > max_bytes {
                    match lines.pop_front() {
                        Some(l) => {
                            bytes -= LogLine::encoded_len(&l.stream, &l.text);
                            truncated = true;
                        }
                        None => break,
                    }
                }
            }
            Ok::<_, BollardError>(Logs {
                container: t.name.clone(),
                lines: lines.into(),
                truncated,
            })
        };
        self.call("read the logs", CALL_TIMEOUT, collect).await
    }

    /// Docker's log stream of `t` as lines (`None` for what is not a line of output: stdin
    /// echoes). With `follow` it lasts until the container stops, and is read only as fast as
    /// its reader polls it: Docker's socket fills and the engine waits (backpressure).
    pub fn log_lines(
        &self,
        t: &Resolved,
        q: &LogQuery,
        follow: bool,
    ) -> Result<LogLines, DriverError> {
        let docker = self.docker()?;
        let tail = q.tail.map_or_else(|| "all".to_owned(), |n| n.to_string());
        let since = i32::try_from(q.since.unwrap_or(0).max(0)).unwrap_or(i32::MAX);
        let opts = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .follow(follow)
            .timestamps(q.timestamps)
            .since(since)
            .tail(&tail)
            .build();
        Ok(Box::pin(
            docker.logs(&t.id, Some(opts)).map(|item| item.map(line_of)),
        ))
    }

    /// Maps a log stream's error (for a reader of [`Driver::log_lines`]).
    pub fn log_error(&self, e: BollardError) -> DriverError {
        self.map_error("read the logs", e)
    }
}

/// Which lines of a container's output: the last `tail` (all with `None`), since a Unix time,
/// with Docker's timestamps or not.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogQuery {
    pub tail: Option<u32>,
    pub since: Option<i64>,
    pub timestamps: bool,
}

/// A container's output, line by line (see [`Driver::log_lines`]).
pub type LogLines =
    std::pin::Pin<Box<dyn Stream<Item = Result<Option<LogLine>, BollardError>> + Send + 'static>>;

/// One frame of Docker's output as a line: multiplexed frames carry their stream; a TTY
/// container's output (`Console`) is stdout.
fn line_of(item: bollard::container::LogOutput) -> Option<LogLine> {
    use bollard::container::LogOutput;
    let (stream, message) = match item {
        LogOutput::StdErr { message } => ("stderr", message),
        LogOutput::StdOut { message } | LogOutput::Console { message } => ("stdout", message),
        LogOutput::StdIn { .. } => return None,
    };
    let text = String::from_utf8_lossy(&message)
        .trim_end_matches(['\n', '\r'])
        .to_owned();
    Some(LogLine {
        stream: stream.to_owned(),
        text,
    })
}
