// Signing in on the page (README, "Sign-in"): when the address carries no #token=, the page asks the hub who its
// session cookie says this browser is (GET /auth/session). Signed in: the client's token is `sessionToken()`, which
// renews the session and the connection before it ends. Not signed in, on a hub with a sign-in: a link to /login that
// comes back to this very address (an approval's deep link included). Signed in: a Sign out button (a form POST,
// which the hub takes only from its own page).

import { sessionToken } from "/client/src/runcast.js";

/** This page's address, as the `next` to come back to after signing in. */
export const here = () => location.pathname + location.search + location.hash;

/** The sign-in address that comes back here. */
export const loginHref = (login = "/login") => `${login}?next=${encodeURIComponent(here())}`;

/**
 * The hub's word on this browser: {user, login, oidc, dev} (user null when not signed in), or null from a hub with
 * no sign-in at all (tokens only).
 */
export async function session() {
  try {
    const r = await fetch("/auth/session", { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (!r.ok) return null;
    return await r.json();
  } catch {
    return null;
  }
}

/** The client's token for a signed-in page. */
export const sessionTokenFn = () => sessionToken();

/** Show "Sign in" (on a hub that has a sign-in) in the page's explanation of why it shows nothing. */
export function showSignIn(box, s) {
  box.querySelector("[data-signin]")?.remove();
  if (!s || !s.login) return;
  const p = document.createElement("p");
  p.dataset.signin = "";
  const a = document.createElement("a");
  a.href = loginHref(s.login);
  a.className = "button";
  a.dataset.testid = "sign-in";
  a.textContent = s.dev ? "Sign in (pick Dana, Alex or Vic)" : "Sign in";
  p.append(a);
  box.prepend(p);
  // the link follows the address: a deep link opened now comes back to its approval after sign-in
  window.addEventListener("hashchange", () => { a.href = loginHref(s.login); });
}

/** A Sign out button beside the person's name in the header. */
export function addSignOut(header) {
  if (header.querySelector("[data-testid=sign-out]")) return;
  const form = document.createElement("form");
  form.method = "post";
  form.action = "/auth/logout";
  form.className = "signout";
  const b = document.createElement("button");
  b.type = "submit";
  b.className = "small";
  b.dataset.testid = "sign-out";
  b.textContent = "Sign out";
  form.append(b);
  header.append(form);
}

/** What to say when the hub refuses the session (expired, or signed out in another tab). */
export function sessionMessage(err) {
  return `You are signed out (${err?.message?.replace(/^runcast: /, "") || "your session ended"}). Sign in again to go on.`;
}
