//! Lists of addresses in one setting: `AMQP_URL=amqp://a:5672,amqp://b:5672`, or
//! `AUTH_SERVICE_URL=http://10.0.0.1:3001,http://10.0.0.2:3001`. Comma-separated full URLs,
//! each standing alone, so a single URL is simply a list of one and every tool that reads one
//! URL reads the first of a list. (A comma cannot appear unencoded in the parts of a URL these
//! settings use: host, port, user, password and vhost are percent-encoded where needed.)

/// The non-empty entries of `list`, trimmed, in the order given.
pub fn split(list: &str) -> Vec<&str> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// The first entry of `list` (the whole text when it holds none).
pub fn first(list: &str) -> &str {
    split(list).first().copied().unwrap_or(list)
}

/// Applies `f` to each entry and joins the results back into a list.
pub fn map<E>(list: &str, f: impl FnMut(&str) -> Result<String, E>) -> Result<String, E> {
    let mapped: Result<Vec<String>, E> = split(list).into_iter().map(f).collect();
    Ok(mapped?.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_url_is_a_list_of_one() {
        assert_eq!(split("amqp://a:5672/v"), vec!["amqp://a:5672/v"]);
        assert_eq!(first("amqp://a:5672/v"), "amqp://a:5672/v");
    }

    #[test]
    fn entries_are_trimmed_and_empty_ones_dropped() {
        assert_eq!(
            split(" amqp://a:1 , ,amqp://b:2,"),
            vec!["amqp://a:1", "amqp://b:2"]
        );
        assert_eq!(first(" amqp://a:1 , amqp://b:2"), "amqp://a:1");
    }

    #[test]
    fn map_keeps_the_order() {
        let doubled: Result<String, ()> = map("a,b", |s| Ok(format!("{s}{s}")));
        assert_eq!(doubled.as_deref(), Ok("aa,bb"));
    }
}
