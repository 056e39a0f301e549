//! Plain-text tables that fit a terminal: each column has a cap, and when the rows
//! are still too wide the widest shrinkable columns give way first. Long values are
//! cut with `…`, at the end (names) or in the middle (ids, whose ends tell them apart).
//! Widths count characters, not display cells.

/// Where a value too long for its column loses characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Keep the start: `Agent for the…`.
    End,
    /// Keep both ends: `trading-7f3…c9e2`.
    Middle,
}

/// One column: its header and how it may be narrowed.
#[derive(Debug, Clone)]
pub struct Column {
    pub header: &'static str,
    /// Widest it gets, however long its values.
    pub max: usize,
    /// Narrowest it may be squeezed to when the table is too wide (at least the header).
    pub min: usize,
    pub cut: Cut,
    /// Right-aligned (numbers).
    pub right: bool,
    /// Narrowed only when the other columns are at their minimum (ids).
    pub keep: bool,
}

impl Column {
    pub fn new(header: &'static str, min: usize, max: usize, cut: Cut) -> Self {
        Column {
            header,
            max: max.max(header.chars().count()),
            min: min.max(header.chars().count()),
            cut,
            right: false,
            keep: false,
        }
    }

    pub fn right(mut self) -> Self {
        self.right = true;
        self
    }

    pub fn keep(mut self) -> Self {
        self.keep = true;
        self
    }
}

const GAP: &str = "  ";

/// Renders `rows` under `columns`, at most `width` characters a line where the columns'
/// minimums allow. Every line ends with `\n`; trailing spaces are trimmed.
pub fn render(columns: &[Column], rows: &[Vec<String>], width: usize) -> String {
    let widths = fit(columns, rows, width);
    render_rows(columns, &widths, rows, true)
}

/// Renders `rows` in columns of the given `widths` (from [`fit`]), under a header line
/// when `header`.
pub fn render_rows(
    columns: &[Column],
    widths: &[usize],
    rows: &[Vec<String>],
    header: bool,
) -> String {
    let mut out = String::new();
    let header_row: Vec<String> = columns.iter().map(|c| c.header.to_string()).collect();
    let lines = header.then_some(&header_row).into_iter().chain(rows);
    for row in lines {
        let mut line = String::new();
        for (i, col) in columns.iter().enumerate() {
            let value = row.get(i).map(String::as_str).unwrap_or("");
            let cell = truncate(value, widths[i], col.cut);
            let pad = widths[i].saturating_sub(cell.chars().count());
            if i > 0 {
                line.push_str(GAP);
            }
            if col.right {
                line.extend(std::iter::repeat_n(' ', pad));
                line.push_str(&cell);
            } else {
                line.push_str(&cell);
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Column widths: each column as wide as its widest value (capped), then the widest
/// column above its minimum loses a character at a time until the line fits `width`;
/// columns marked `keep` only once no other column can give way.
pub fn fit(columns: &[Column], rows: &[Vec<String>], width: usize) -> Vec<usize> {
    let mut widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let longest = rows
                .iter()
                .filter_map(|r| r.get(i))
                .map(|v| v.chars().count())
                .max()
                .unwrap_or(0);
            longest.max(c.header.chars().count()).min(c.max)
        })
        .collect();
    let total = |w: &[usize]| {
        w.iter().fold(0usize, |sum, x| sum.saturating_add(*x))
            + GAP.len() * w.len().saturating_sub(1)
    };
    while total(&widths) > width {
        let widest = |keep: bool| {
            widths
                .iter()
                .enumerate()
                .filter(|(i, w)| **w > columns[*i].min && columns[*i].keep == keep)
                .max_by_key(|(i, w)| (**w, std::cmp::Reverse(*i)))
                .map(|(i, _)| i)
        };
        let widest = widest(false).or_else(|| widest(true));
        match widest {
            Some(i) => widths[i] -= 1,
            None => break,
        }
    }
    widths
}

/// `value` cut to `width` characters, marking the cut with `…`.
pub fn truncate(value: &str, width: usize, cut: Cut) -> String {
    let n = value.chars().count();
    if n <= width {
        return value.to_string();
    }
    if width == 0 {
        return String::new();
    }
    let keep = width - 1;
    match cut {
        Cut::End => value.chars().take(keep).chain(['…']).collect(),
        Cut::Middle => {
            let tail = keep / 2;
            let head = keep - tail;
            let start: String = value.chars().take(head).collect();
            let end: String = value.chars().skip(n - tail).collect();
            format!("{start}…{end}")
        }
    }
}

/// A byte count for people: `512B`, `64.0Mi`, `1.5Gi`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["Ki", "Mi", "Gi", "Ti"];
    if n < 1024 {
        return format!("{n}B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1}{}", UNITS[unit])
}

/// A duration in seconds for people, in its largest unit: `42s`, `17m`, `5h`, `12d`.
pub fn age(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols() -> Vec<Column> {
        vec![
            Column::new("ID", 8, 20, Cut::Middle),
            Column::new("NAME", 6, 30, Cut::End),
            Column::new("N", 1, 5, Cut::End).right(),
        ]
    }

    #[test]
    fn short_values_keep_their_width_and_align() {
        let rows = vec![vec!["a1".into(), "Risk".into(), "7".into()]];
        let out = render(&cols(), &rows, 100);
        assert_eq!(out, "ID  NAME  N\na1  Risk  7\n");
    }

    #[test]
    fn long_values_are_capped_and_marked() {
        let rows = vec![vec![
            "trading-0123456789abcdef0123".into(),
            "x".repeat(40),
            "12345678".into(),
        ]];
        let w = fit(&cols(), &rows, 200);
        assert_eq!(w, vec![20, 30, 5]);
        let out = render(&cols(), &rows, 200);
        let line = out.lines().nth(1).unwrap();
        assert!(line.starts_with("trading-01…bcdef0123  "), "{line}");
        assert!(line.contains(&format!("{}…", "x".repeat(29))), "{line}");
    }

    #[test]
    fn a_narrow_terminal_squeezes_the_widest_column_first() {
        let rows = vec![vec!["i".repeat(20), "n".repeat(30), "1".into()]];
        let w = fit(&cols(), &rows, 40);
        assert_eq!(w.iter().sum::<usize>() + 4, 40, "{w:?}");
        assert!(w[0] >= 8 && w[1] >= 6);
        for line in render(&cols(), &rows, 40).lines() {
            assert!(line.chars().count() <= 40, "{line}");
        }
    }

    #[test]
    fn kept_columns_give_way_last() {
        let cols = vec![
            Column::new("ID", 8, 20, Cut::Middle).keep(),
            Column::new("NAME", 6, 30, Cut::End),
        ];
        let rows = vec![vec!["i".repeat(20), "n".repeat(30)]];
        assert_eq!(fit(&cols, &rows, 30), vec![20, 8]);
        assert_eq!(fit(&cols, &rows, 20), vec![12, 6]);
    }

    #[test]
    fn minimums_win_over_the_width() {
        let rows = vec![vec!["i".repeat(20), "n".repeat(30), "1".into()]];
        assert_eq!(fit(&cols(), &rows, 5), vec![8, 6, 1]);
    }

    #[test]
    fn truncate_cuts_on_characters_not_bytes() {
        assert_eq!(truncate("héllo wörld", 6, Cut::End), "héllo…");
        assert_eq!(truncate("abcdefghij", 5, Cut::Middle), "ab…ij");
        assert_eq!(truncate("abc", 3, Cut::Middle), "abc");
        assert_eq!(truncate("abc", 0, Cut::End), "");
    }

    #[test]
    fn sizes_and_ages_read_well() {
        assert_eq!(bytes(512), "512B");
        assert_eq!(bytes(64 * 1024 * 1024), "64.0Mi");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024 / 2), "1.5Gi");
        assert_eq!(age(-3), "0s");
        assert_eq!(age(42), "42s");
        assert_eq!(age(17 * 60), "17m");
        assert_eq!(age(5 * 3600), "5h");
        assert_eq!(age(12 * 86_400), "12d");
    }
}
