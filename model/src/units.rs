//! Human units in pipeline files: durations (`90s`, `20m`, `1h30m`) and sizes (`512M`, `4G` = GiB).

/// Parses `90`, `90s`, `20m`, `1h30m`, `2h` into seconds.
pub fn parse_duration_secs(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(secs);
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => {
                return Err(format!(
                    "{text:?} is not a duration (use e.g. 90s, 20m, 1h30m)"
                ));
            }
        };
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("{text:?} is not a duration (a number must come before '{c}')"))?;
        total = total.saturating_add(n.saturating_mul(unit));
        digits.clear();
    }
    if !digits.is_empty() || text.is_empty() {
        return Err(format!(
            "{text:?} is not a duration (use e.g. 90s, 20m, 1h30m)"
        ));
    }
    Ok(total)
}

/// Parses `4096`, `512K`, `512M`, `4G`, `1T` (binary multiples; a trailing `i`/`B` is allowed) into bytes.
pub fn parse_size_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let t = t.strip_suffix('B').unwrap_or(t);
    let t = t.strip_suffix('i').unwrap_or(t);
    let (num, mult) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 1 << 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 1 << 30),
        Some('T' | 't') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a size (use e.g. 512M or 4G)"))?;
    if !(n.is_finite() && n > 0.0) {
        return Err(format!("{text:?} must be a positive size"));
    }
    Ok((n * mult as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_every_unit_and_refuse_garbage() {
        assert_eq!(parse_duration_secs("90").unwrap(), 90);
        assert_eq!(parse_duration_secs("20m").unwrap(), 1200);
        assert_eq!(parse_duration_secs("1h30m").unwrap(), 5400);
        assert!(parse_duration_secs("m").is_err());
        assert!(parse_duration_secs("10x").is_err());
        assert!(parse_duration_secs("10m5").is_err());
    }

    #[test]
    fn sizes_are_binary_multiples() {
        assert_eq!(parse_size_bytes("4G").unwrap(), 4 << 30);
        assert_eq!(parse_size_bytes("512Mi").unwrap(), 512 << 20);
        assert_eq!(parse_size_bytes("1000").unwrap(), 1000);
        assert!(parse_size_bytes("-1G").is_err());
        assert!(parse_size_bytes("lots").is_err());
    }
}
