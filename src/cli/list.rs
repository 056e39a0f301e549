//! `agents list`: every agent (or one customer's, or those of one status) as a table
//! (`-o wide` adds the image, container and node), JSON or YAML; `--watch` then prints a row
//! each time an agent's status, health, restarts, name or image changes (and `deleted`
//! when it goes), as `kubectl get -w` does.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::agents::{redis_down, store};
use super::table::{self, Column, Cut};
use super::CliError;
use crate::config::Config;
use crate::error::StoreError;
use crate::protocol::AgentStatus;
use crate::store::{record_json, AgentRecord, Store};

/// How often `--watch` looks again.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// `-o` of `agents list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ListFormat {
    #[default]
    Table,
    /// The table with the image and container too.
    Wide,
    Json,
    Yaml,
}

/// What `agents list` was asked for.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// Only this customer's agents.
    pub customer: Option<String>,
    /// Only agents in this status (its name, checked here).
    pub status: Option<String>,
    pub format: ListFormat,
    /// Values in full, however wide the table gets.
    pub no_trunc: bool,
    /// No header line (tables).
    pub no_headers: bool,
    /// Keep printing changes until interrupted (tables).
    pub watch: bool,
    /// The terminal's width in columns.
    pub width: usize,
}

/// One listed agent: its stored fields and what they parse to.
type Row = (HashMap<String, String>, Result<AgentRecord, StoreError>);

/// `agents list`.
pub async fn list(
    config: &Config,
    opts: &ListOptions,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let status = match &opts.status {
        None => None,
        Some(s) => Some(AgentStatus::parse(s).ok_or_else(|| {
            let all: Vec<&str> = AgentStatus::ALL.iter().map(|s| s.as_str()).collect();
            CliError::Usage(format!("unknown status '{s}'; one of: {}", all.join(", ")))
        })?),
    };
    if opts.watch && matches!(opts.format, ListFormat::Json | ListFormat::Yaml) {
        return Err(CliError::Usage(
            "--watch prints tables (-o table or -o wide)".into(),
        ));
    }
    let store = store(config).await?;
    let rows = load(config, &store, opts.customer.as_deref(), status).await?;
    let wide = opts.format == ListFormat::Wide;
    match opts.format {
        ListFormat::Json => {
            let records: Vec<Value> = rows.iter().map(|(f, _)| record_json(f)).collect();
            serde_json::to_writer_pretty(&mut *out, &records).map_err(std::io::Error::from)?;
            writeln!(out)?;
        }
        ListFormat::Yaml => {
            let records: Vec<Value> = rows.iter().map(|(f, _)| record_json(f)).collect();
            let text = serde_norway::to_string(&records)
                .map_err(|e| CliError::Output(std::io::Error::other(e)))?;
            out.write_all(text.as_bytes())?;
        }
        ListFormat::Table | ListFormat::Wide if rows.is_empty() && !opts.watch => {
            if !opts.no_headers {
                writeln!(out, "no agents")?;
            }
        }
        ListFormat::Table | ListFormat::Wide => {
            let columns = columns(wide, opts.no_trunc);
            let now = Utc::now();
            let cells: Vec<Vec<String>> = rows.iter().map(|r| row(r, wide, now)).collect();
            let width = if opts.no_trunc {
                usize::MAX
            } else {
                opts.width
            };
            let widths = table::fit(&columns, &cells, width);
            out.write_all(
                table::render_rows(&columns, &widths, &cells, !opts.no_headers).as_bytes(),
            )?;
            out.flush()?;
            if opts.watch {
                let watching = Watching {
                    config,
                    store: &store,
                    opts,
                    status,
                    columns: &columns,
                    widths: &widths,
                };
                watching.run(rows, out).await?;
            }
        }
    }
    Ok(())
}

async fn load(
    config: &Config,
    store: &Store,
    customer: Option<&str>,
    status: Option<AgentStatus>,
) -> Result<Vec<Row>, CliError> {
    let ids = store
        .list_ids(customer)
        .await
        .map_err(|e| redis_down(config, &e))?;
    let mut rows: Vec<Row> = store
        .load_fields(&ids)
        .await
        .map_err(|e| redis_down(config, &e))?
        .into_iter()
        .map(|(id, fields)| {
            let record = AgentRecord::from_fields(&store.keys().agent(&id), &fields);
            (fields, record)
        })
        .collect();
    // A corrupt record has no status to match: it is listed only when no status is asked.
    if let Some(want) = status {
        rows.retain(|(_, r)| r.as_ref().is_ok_and(|r| r.status() == want));
    }
    rows.sort_by_key(|r| field(&r.0, "agent_id"));
    Ok(rows)
}

/// What `--watch` keeps between its looks: where it reads, what it was asked for, and
/// the table's columns and widths as the first listing fitted them (rows printed later
/// line up under that header).
struct Watching<'a> {
    config: &'a Config,
    store: &'a Store,
    opts: &'a ListOptions,
    /// `opts.status`, parsed.
    status: Option<AgentStatus>,
    columns: &'a [Column],
    widths: &'a [usize],
}

impl Watching<'_> {
    /// Every [`WATCH_EVERY`], the rows whose [`watched`] values changed since `rows`
    /// (the listing already printed), and a `deleted` row for each agent gone. Ends only
    /// with an error or the reader going.
    async fn run(&self, rows: Vec<Row>, out: &mut dyn Write) -> Result<(), CliError> {
        let (config, store, opts, status) = (self.config, self.store, self.opts, self.status);
        let (columns, widths) = (self.columns, self.widths);
        let wide = opts.format == ListFormat::Wide;
        let mut seen: BTreeMap<String, (String, Vec<String>)> = rows
            .iter()
            .map(|r| {
                (
                    field(&r.0, "agent_id"),
                    (watched(&r.0), row(r, wide, Utc::now())),
                )
            })
            .collect();
        loop {
            tokio::time::sleep(WATCH_EVERY).await;
            let now = Utc::now();
            let rows = load(config, store, opts.customer.as_deref(), status).await?;
            let mut changed = Vec::new();
            let mut present = Vec::with_capacity(rows.len());
            for r in &rows {
                let id = field(&r.0, "agent_id");
                let key = watched(&r.0);
                present.push(id.clone());
                if seen.get(&id).map(|(k, _)| k) != Some(&key) {
                    let cells = row(r, wide, now);
                    changed.push(cells.clone());
                    seen.insert(id, (key, cells));
                }
            }
            let gone: Vec<String> = seen
                .keys()
                .filter(|id| !present.contains(id))
                .cloned()
                .collect();
            for id in gone {
                if let Some((_, mut cells)) = seen.remove(&id) {
                    cells[STATUS_COLUMN] = "deleted".into();
                    changed.push(cells);
                }
            }
            if !changed.is_empty() {
                out.write_all(table::render_rows(columns, widths, &changed, false).as_bytes())?;
                out.flush()?;
            }
        }
    }
}

/// The values whose change `--watch` reports (not CPU, memory or age, which move all
/// the time).
fn watched(fields: &HashMap<String, String>) -> String {
    [
        "status",
        "health",
        "restart_count",
        "name",
        "image",
        "container_id",
    ]
    .iter()
    .map(|k| field(fields, k))
    .collect::<Vec<_>>()
    .join("\u{1f}")
}

fn field(fields: &HashMap<String, String>, name: &str) -> String {
    fields.get(name).cloned().unwrap_or_default()
}

/// Where STATUS is among the columns.
const STATUS_COLUMN: usize = 4;

/// The columns; `wide` adds IMAGE, CONTAINER and NODE (swarm mode: where the task runs); `no_trunc` lifts every cap.
pub fn columns(wide: bool, no_trunc: bool) -> Vec<Column> {
    let mut columns = vec![
        // Minimums near the headers' widths, so that the table fits 80 columns.
        Column::new("AGENT ID", 10, 36, Cut::Middle).keep(),
        Column::new("CUSTOMER", 8, 16, Cut::Middle),
        Column::new("TYPE", 4, 14, Cut::End),
        Column::new("NAME", 4, 24, Cut::End),
        Column::new("STATUS", 6, 10, Cut::End),
        Column::new("HEALTH", 6, 9, Cut::End),
        Column::new("RESTARTS", 8, 8, Cut::End).right(),
        Column::new("CPU%", 4, 6, Cut::End).right(),
        Column::new("MEM", 5, 8, Cut::End).right(),
        Column::new("AGE", 3, 5, Cut::End).right(),
    ];
    if wide {
        columns.push(Column::new("IMAGE", 12, 40, Cut::Middle));
        columns.push(Column::new("CONTAINER", 12, 12, Cut::End));
        columns.push(Column::new("NODE", 4, 24, Cut::End));
    }
    if no_trunc {
        for c in &mut columns {
            c.max = usize::MAX;
        }
    }
    columns
}

/// One agent's cells, in the order of [`columns`].
pub fn row((fields, record): &Row, wide: bool, now: DateTime<Utc>) -> Vec<String> {
    let mut cells = match record {
        Ok(r) => vec![
            r.agent_id.clone(),
            r.spec.customer_id.clone(),
            r.spec.agent_type.as_str().to_string(),
            r.spec.name.clone(),
            r.status().as_str().to_string(),
            if r.health.is_empty() {
                "-".into()
            } else {
                r.health.clone()
            },
            r.restart_count.to_string(),
            format!("{:.1}", r.cpu_percent),
            table::bytes(r.memory_bytes),
            table::age((now - r.created_at).num_seconds()),
        ],
        Err(e) => {
            let f = |name: &str| fields.get(name).cloned().unwrap_or_else(|| "?".into());
            vec![
                f("agent_id"),
                f("customer_id"),
                f("agent_type"),
                format!("(corrupt record: {e})"),
                f("status"),
                f("health"),
                f("restart_count"),
                "?".into(),
                "?".into(),
                "?".into(),
            ]
        }
    };
    if wide {
        let container = fields.get("container_id").map_or("-", String::as_str);
        cells.push(fields.get("image").cloned().unwrap_or_else(|| "-".into()));
        cells.push(match container {
            "" => "-".to_string(),
            id => id.chars().take(12).collect(),
        });
        cells.push(match fields.get("node").map_or("", String::as_str) {
            "" => "-".to_string(),
            node => node.to_string(),
        });
    }
    cells
}

#[cfg(test)]
mod tests {
    use super::*;

    fn long_row(wide: bool) -> Vec<String> {
        let long = "x".repeat(64);
        let mut row = vec![
            long.clone(),
            long.clone(),
            "portfolio_optimization".into(),
            long.clone(),
            "restarting".into(),
            "unhealthy".into(),
            "12345".into(),
            "100.0".into(),
            "1023.9Mi".into(),
            "364d".into(),
        ];
        if wide {
            row.push(long);
            row.push("0123456789ab".into());
            row.push("amc2".into());
        }
        row
    }

    #[test]
    fn the_list_fits_an_80_column_terminal_with_long_values() {
        let row = long_row(false);
        for width in [100, 80] {
            let text = table::render(&columns(false, false), std::slice::from_ref(&row), width);
            for line in text.lines() {
                assert!(line.chars().count() <= width, "{line}");
            }
        }
        assert!(table::render(&columns(false, false), &[row], 120).starts_with("AGENT ID"));
    }

    #[test]
    fn no_trunc_keeps_every_value_whole() {
        let row = long_row(true);
        let cols = columns(true, true);
        let widths = table::fit(&cols, std::slice::from_ref(&row), usize::MAX);
        let text = table::render_rows(&cols, &widths, std::slice::from_ref(&row), false);
        assert_eq!(text.lines().count(), 1, "no header");
        assert!(text.contains(&"x".repeat(64)), "{text}");
        assert!(!text.contains('…'), "{text}");
    }

    #[test]
    fn status_is_where_watch_marks_a_deletion() {
        assert_eq!(columns(false, false)[STATUS_COLUMN].header, "STATUS");
    }

    #[test]
    fn watch_ignores_what_moves_all_the_time() {
        let mut a: HashMap<String, String> = [("status", "running"), ("cpu_percent", "1.0")]
            .map(|(k, v)| (k.into(), v.into()))
            .into();
        let before = watched(&a);
        a.insert("cpu_percent".into(), "9.0".into());
        assert_eq!(watched(&a), before);
        a.insert("restart_count".into(), "1".into());
        assert_ne!(watched(&a), before);
    }
}
