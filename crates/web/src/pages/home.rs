//! `/`: who is signed in and the pages their role may use.

use crate::page::{layout, links};
use crate::staff::Staff;
use maud::{html, Markup};

pub async fn show(staff: Staff) -> Markup {
    let user = &staff.signed.user;
    let body = html! {
        p { "Signed in as " strong { (user.first_name) " " (user.last_name) } ", " (user.role) "." }
        h2 { "Your pages" }
        ul {
            @for (href, label) in links(user.role).into_iter().skip(1) {
                li { a href=(href) { (label) } }
            }
        }
    };
    layout("Home", Some((&staff.signed, &staff.session)), body)
}
