"""The dashboard: server-rendered pages for an account's calls, campaigns, apps, numbers, API
keys and sandbox phones, served by ``ringflow serve`` at ``/``.

- ``site.py``     routes, sign-in and sign-out, the session and CSRF check, account scoping
- ``auth.py``     password hashes (scrypt), the signed session cookie, CSRF tokens
- ``logins.py``   who may sign in: an account's dashboard password, the instance's operators
- ``pages.py``    overview, ExoPhones, API credentials, trunks, the operator's accounts
- ``calls.py``    the call list (the bulk API's filters and cursors), a call, its recordings
- ``campaigns.py`` campaigns: the list, a campaign with live progress and its calls, pause,
  resume and stop, and creating one from a CSV (``campaign_form.py`` reads that form)
- ``apps.py``     the app list and editor, trying an app on the sandbox
- ``sandbox.py``  scripting virtual phones and placing test calls
- ``queries.py``  what the pages read, always by (account, id)
- ``editor.py``   YAML/JSON source to app data, each validation problem pinned to its line
- ``graph.py``    an app drawn as SVG (a layered layout computed here, no JavaScript)

Sign-in: an account signs in with its SID and a dashboard password set by
``ringflow accounts password SID``; an operator, who may open every account's pages, signs in
at ``/operator/login`` with a name and password set by ``ringflow operator password NAME``.
Both are stored hashed in the database, so every process of a deployment shares them.

Sessions live in a signed cookie (HttpOnly, SameSite=Lax, Secure behind an https
``RINGFLOW_PUBLIC_URL``) that expires after 12 hours of the server's clock and ends when its
password changes; every form carries the session's CSRF token. Pages that change while you watch
(the overview, the call list, a call in progress) are refreshed by ``static/dashboard.js``, which
polls a fragment of the page; there is no JavaScript build and nothing loads from another host.
"""
