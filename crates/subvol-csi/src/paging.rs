//! Paging of ListVolumes and ListSnapshots. A token is the decimal index
//! of the next entry in the listing's order (by name, then creation). A
//! token that is not one (or lies past the end, the listing having shrunk)
//! is answered ABORTED, as the spec asks: the CO lists again from the start.

use tonic::Status;

/// The page of `items` starting at `token`, at most `max_entries` long (0:
/// all), and the token of the next page (empty after the last).
pub(crate) fn page<T>(mut items: Vec<T>, max_entries: i32, token: &str) -> Result<(Vec<T>, String), Status> {
    if max_entries < 0 {
        return Err(Status::invalid_argument(format!("max_entries {max_entries} is negative")));
    }
    let start = match token {
        "" => 0,
        t => match t.parse::<usize>() {
            Ok(n) if n <= items.len() => n,
            _ => return Err(Status::aborted(format!("starting_token {t:?} is not one this driver gave; list again"))),
        },
    };
    let end = match max_entries {
        0 => items.len(),
        n => items.len().min(start + n as usize),
    };
    let next = if end < items.len() { end.to_string() } else { String::new() };
    items.truncate(end);
    Ok((items.split_off(start), next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_cover_everything_once() {
        let items: Vec<u32> = (0..5).collect();
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let (p, next) = page(items.clone(), 2, &token).unwrap();
            assert!(p.len() <= 2);
            seen.extend(p);
            if next.is_empty() {
                break;
            }
            token = next;
        }
        assert_eq!(seen, items);
        assert_eq!(page(items.clone(), 0, "").unwrap(), (items.clone(), String::new()));
        assert_eq!(page(items.clone(), 0, "x").unwrap_err().code(), tonic::Code::Aborted);
        assert_eq!(page(items.clone(), 0, "6").unwrap_err().code(), tonic::Code::Aborted);
        assert_eq!(page(items, -1, "").unwrap_err().code(), tonic::Code::InvalidArgument);
    }
}
