//! Paging of ListVolumes and ListSnapshots. Entries are listed by id, and
//! a token is `after:ID`, the id of the last entry of the page before: the
//! next page starts at the first id above it. An index would skip an
//! entry when one before it goes between two pages (a CO deleting while
//! it lists); a key does not, and entries made meanwhile show up if they
//! sort after it. A token of any other form is answered ABORTED, as the
//! spec asks: the CO lists again from the start.

use tonic::Status;

const PREFIX: &str = "after:";

/// The page of `items` (sorted by `id`, ascending) starting after `token`,
/// at most `max_entries` long (0: all), and the token of the next page
/// (empty after the last). `valid_id` tells an id this driver could have
/// put in a token from anything else.
pub(crate) fn page<T>(
    items: Vec<T>,
    id: impl Fn(&T) -> &str,
    valid_id: impl Fn(&str) -> bool,
    max_entries: i32,
    token: &str,
) -> Result<(Vec<T>, String), Status> {
    if max_entries < 0 {
        return Err(Status::invalid_argument(format!("max_entries {max_entries} is negative")));
    }
    let after = match token {
        "" => None,
        t => match t.strip_prefix(PREFIX) {
            Some(k) if valid_id(k) => Some(k.to_string()),
            _ => return Err(Status::aborted(format!("starting_token {t:?} is not one this driver gave; list again"))),
        },
    };
    let mut rest: Vec<T> = items.into_iter().filter(|i| after.as_deref().is_none_or(|a| id(i) > a)).collect();
    if max_entries == 0 || rest.len() <= max_entries as usize {
        return Ok((rest, String::new()));
    }
    rest.truncate(max_entries as usize);
    let next = format!("{PREFIX}{}", rest.last().map(&id).unwrap_or_default());
    Ok((rest, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn run(items: Vec<String>, max: i32, token: &str) -> Result<(Vec<String>, String), Status> {
        page(items, |s| s.as_str(), |k| !k.is_empty() && !k.contains(':'), max, token)
    }

    #[test]
    fn pages_cover_everything_once() {
        let items = ids(&["a", "b", "c", "d", "e"]);
        let (mut seen, mut token) = (Vec::new(), String::new());
        loop {
            let (p, next) = run(items.clone(), 2, &token).unwrap();
            assert!(p.len() <= 2);
            seen.extend(p);
            if next.is_empty() {
                break;
            }
            token = next;
        }
        assert_eq!(seen, items);
        assert_eq!(run(items.clone(), 0, "").unwrap(), (items.clone(), String::new()));
        assert_eq!(run(items.clone(), 5, "").unwrap().1, "", "an exact last page has no next token");
    }

    #[test]
    fn a_deleted_last_entry_skips_nothing() {
        let (first, token) = run(ids(&["a", "b", "c", "d"]), 2, "").unwrap();
        assert_eq!((first, token.as_str()), (ids(&["a", "b"]), "after:b"));
        // "b" goes, "bb" comes, between the two pages.
        let (second, _) = run(ids(&["a", "bb", "c", "d"]), 2, &token).unwrap();
        assert_eq!(second, ids(&["bb", "c"]));
    }

    #[test]
    fn tokens_not_given_are_aborted() {
        let items = ids(&["a", "b"]);
        for t in ["x", "1", "after:", "after:a:b"] {
            assert_eq!(run(items.clone(), 0, t).unwrap_err().code(), tonic::Code::Aborted, "{t}");
        }
        assert_eq!(run(items.clone(), -1, "").unwrap_err().code(), tonic::Code::InvalidArgument);
        // Past the end is an empty last page, not an error.
        assert_eq!(run(items, 1, "after:z").unwrap(), (Vec::new(), String::new()));
    }
}
