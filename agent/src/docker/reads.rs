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

    /// The last `tail` lines, bounded to `max_bytes` (oldest lines dropped first).
    pub async fn logs(
        &self,
        t: &Resolved,
        tail: u32,
        timestamps: bool,
        max_bytes: usize,
    ) -> Result<Logs, DriverError> {
        let docker = self.docker()?;
        let tail = tail.to_string();
        let opts = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .timestamps(timestamps)
            .tail(&tail)
            .build();
        let collect = async {
            let mut stream = docker.logs(&t.id, Some(opts));
            let mut lines = std::collections::VecDeque::new();
            let mut bytes = 0usize;
            let mut truncated = false;
            while let Some(item) = stream.next().await {
                let (stream_name, message) = match item? {
                    bollard::container::LogOutput::StdErr { message } => ("stderr", message),
                    bollard::container::LogOutput::StdOut { message }
                    | bollard::container::LogOutput::Console { message } => ("stdout", message),
                    bollard::container::LogOutput::StdIn { .. } => continue,
                };
                let text = String::from_utf8_lossy(&message)
                    .trim_end_matches(['\n', '\r'])
                    .to_owned();
                // The encoded size counts: JSON escaping grows control characters up to 6×.
                bytes += LogLine::encoded_len(stream_name, &text);
                lines.push_back(LogLine {
                    stream: stream_name.to_owned(),
                    text,
                });
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
}
