/*
 * leadloop website snippet. Site owners paste these two lines on every page:
 *
 *   <script>window.ll=window.ll||function(){(ll.q=ll.q||[]).push(arguments)}</script>
 *   <script async src="https://EDGE/t.js"></script>
 *
 * and may record custom events with ll('event', 'signup_started', {plan: 'pro'}); calls made
 * before this file loads are queued by the first line and replayed here.
 *
 * The edge serves this file as /t.js, minified by build.sh, with its config object in place of
 * the placeholder below: {"dnt":bool,"gpc":bool,"dl":"pdf,zip,..."}. The edge's base URL is
 * this script's own src minus "/t.js".
 *
 * What it does:
 *  - Visitor id: 32 hex chars in localStorage and a first-party cookie, both "_llv" (a new one:
 *    6 bytes of the time in ms, then 10 random bytes, as the edge mints them). A ?_llv=
 *    parameter (the edge hands it over after a tracked email click) is adopted and removed from
 *    the address bar; the id it replaces is sent once as the alias "a".
 *  - Nothing at all (no storage, no requests) under Do Not Track or Global Privacy Control when
 *    the config says so; nothing while the page is only prerendered.
 *  - Events, batched (at most 20) into POST EDGE/e as text/plain JSON, by sendBeacon with a
 *    keepalive fetch as fallback, half a second after they happen and on pagehide/hidden:
 *      {"v":visitor,"a":alias,"e":[{"t":type,"u":url,"ts":ms,...}]}
 *    pageview (r referrer, ti title; also on SPA route changes that change more than the hash),
 *    engage (d.ms visible+focused time without 30 s of inactivity, d.scroll max depth in %),
 *    outbound (d.href), download (d.href, d.ext: by extension from the config, or the download
 *    attribute), custom (d.name and the caller's properties).
 *  - Forms marked data-ll-form="ID" are also posted to EDGE/f/ID, urlencoded (a CORS-simple
 *    request), without password fields or fields named like card, cvv, iban or ssn, plus _llv
 *    (the visitor) and _llu (the page). The form's own submission goes ahead untouched.
 *  - Every entry point is wrapped: an error here never breaks the host page.
 *
 * Source rules, so that build.sh's sed minifier stays safe (it checks most of them):
 * comments only as whole lines (block comments open and close on lines of their own); a
 * semicolon after every statement; no spaces or escaped quotes inside strings or regexps; no
 * template literals; never "+ +" or "- -".
 */
(function (w, d) {
  var C, E, V, A, L = location, H = history, N = navigator, RE = /^[0-9a-f]{32}$/, now = Date.now,
    /* queued events, flush timer, current page (without hash) and its full URL */
    Q = [], T = 0, P, U,
    /* engaged ms, start of the running span (0: not counting), last activity, max scroll %, focus */
    M = 0, S = 0, I = 0, D = 0, F,

    cut = (s, n) => String(s || '').slice(0, n || 2000),

    /* Wraps an entry point: errors stay here. */
    safe = f => function () {
      try {
        return f.apply(this, arguments);
      } catch (x) {
        /* never break the host page */
      }
    },

    on = (t, e, f, o) => t.addEventListener(e, safe(f), o || true),

    post = (u, b, o) => fetch(u, Object.assign({method: 'POST', body: b, keepalive: true, credentials: 'include'}, o)).catch(() => 0),

    ls = (k, v) => {
      try {
        return v ? localStorage.setItem(k, v) : localStorage.getItem(k);
      } catch (x) {
        /* storage disabled */
      }
    },

    flush = () => {
      clearTimeout(T);
      T = 0;
      while (Q.length) {
        var b = {v: V}, j, u = E + '/e';
        if (A) b.a = A;
        if (N.webdriver) b.w = 1;
        A = 0;
        b.e = Q.splice(0, 20);
        j = JSON.stringify(b);
        if (!(N.sendBeacon && N.sendBeacon(u, new Blob([j], {type: 'text/plain'})))) {
          post(u, j, {headers: {'Content-Type': 'text/plain'}});
        }
      }
    },

    /* Queues an event of type t with data o for page URL u (default: this page); x adds fields. */
    push = (t, o, u, x) => {
      var e = Object.assign({t: t, u: cut(u || L.href), ts: now()}, x);
      if (o) e.d = o;
      Q.push(e);
      T = T || setTimeout(safe(flush), 500);
    },

    /* Engaged time: adds the running span (cut 30 s after the last activity), restarts it if the page is visible and focused. */
    acc = () => {
      var n = now();
      if (S) M += Math.max(0, Math.min(n, I + 3e4) - S);
      S = d.visibilityState == 'visible' && F ? n : 0;
    },

    /* max scroll depth in % */
    depth = () => {
      D = Math.max(D, Math.min(100, Math.round((w.scrollY + w.innerHeight) * 100 / Math.max(1, d.documentElement.scrollHeight))));
    },

    /* activity (input or scroll): ends an idle pause */
    act = () => {
      depth();
      if (now() - I > 3e4) acc();
      I = now();
    },

    /* engage: the engaged time of page u since the last one (if any); the count restarts. */
    eng = u => {
      acc();
      depth();
      if (M >= 1) push('engage', {ms: Math.round(M), scroll: D}, u);
      M = 0;
    },

    /* pageview of the current URL, with referrer r */
    pv = r => {
      U = L.href;
      P = U.split('#')[0];
      D = 0;
      I = now();
      acc();
      M = 0;
      depth();
      push('pageview', 0, U, {r: cut(r), ti: cut(d.title, 300)});
    },

    /* SPA navigation: a new URL (not just a new hash) ends one page and starts another. */
    nav = () => {
      if (L.href.split('#')[0] != P) {
        var u = U;
        eng(u);
        pv(u);
      }
    },

    /* hidden or leaving (pagehide and visibilitychange both come, in either order): count nothing more until visible again */
    hide = () => {
      eng(U);
      S = 0;
      flush();
    },

    /* Outbound and download links, by left click (capture phase) or middle click. */
    click = e => {
      var a = e.target.closest('a[href]'), u, m, x, h;
      if (!a || (e.type == 'auxclick' && e.button != 1)) return;
      u = new URL(a.href, L.href);
      m = /\.([a-z0-9]{1,8})$/i.exec(u.pathname);
      x = m ? m[1].toLowerCase() : '';
      h = {href: cut(u.href)};
      if (!/^https?:$/.test(u.protocol)) return;
      if (a.hasAttribute('download') || (x && (',' + C.dl + ',').toLowerCase().includes(',' + x + ','))) {
        h.ext = x;
        push('download', h);
      } else if (u.host != L.host) {
        push('outbound', h);
      } else {
        return;
      }
      flush();
    },

    submit = e => {
      var f = e.target, id = f.getAttribute('data-ll-form'), skip = {}, p = new URLSearchParams();
      if (!id) return;
      for (var el of f.elements) if (el.type == 'password') skip[el.name] = 1;
      new FormData(f).forEach((v, k) => {
        if (typeof v == 'string' && !skip[k] && !/card|cc-|cvv|cvc|iban|ssn/i.test(k)) p.append(k, v);
      });
      p.append('_llv', V);
      p.append('_llu', cut(L.href));
      post(E + '/f/' + encodeURIComponent(id), p, {mode: 'cors'});
    },

    /* ll('event', name, {props}) */
    cmd = a => {
      var o;
      if (a[0] == 'event' && a[1]) {
        o = Object.assign({name: 0}, typeof a[2] == 'object' && a[2]);
        o.name = cut(a[1], 200);
        push('custom', o);
      }
    },

    start = () => {
      var q = (w.ll && w.ll.q) || [], u = new URL(L.href), p = u.searchParams.get('_llv'), old = ls('_llv');
      /* the visitor: adopted from ?_llv= (the old one becomes the alias), stored, or new */
      if (!RE.test(old)) old = (/(^|;\s*)_llv=(\w+)/.exec(d.cookie) || [])[2];
      V = old = RE.test(old) ? old : '';
      if (p != null) {
        u.searchParams.delete('_llv');
        try {
          H.replaceState(H.state, '', u.href);
        } catch (x) {
          /* sandboxed document */
        }
        p = p.toLowerCase();
        if (RE.test(p)) {
          if (old && old != p) A = old;
          V = p;
        }
      }
      if (!V) {
        /* 6 bytes of the time in ms, then 10 random, as the edge mints them: ids sort by first visit */
        var r = crypto.getRandomValues(new Uint8Array(16)), t = now(), i;
        for (i = 5; i >= 0; i--, t = Math.floor(t / 256)) r[i] = t % 256;
        V = Array.from(r, b => (b + 256).toString(16).slice(1)).join('');
      }
      ls('_llv', V);
      d.cookie = '_llv=' + V + ';path=/;max-age=34560000;SameSite=Lax' + (L.protocol == 'https:' ? ';Secure' : '');

      F = d.hasFocus();
      pv(d.referrer);
      w.ll = safe(function () {
        cmd(arguments);
      });
      q.forEach(safe(cmd));
      ['pushState', 'replaceState'].forEach(m => {
        var o = H[m];
        H[m] = function () {
          var r = o.apply(this, arguments);
          safe(nav)();
          return r;
        };
      });
      on(w, 'popstate', nav);
      on(w, 'pageshow', e => e.persisted && pv(d.referrer));
      on(d, 'visibilitychange', () => d.visibilityState == 'hidden' ? hide() : acc());
      on(w, 'pagehide', hide);
      on(w, 'focus', () => {
        F = 1;
        act();
        acc();
      });
      on(w, 'blur', () => {
        F = 0;
        acc();
      });
      ['keydown', 'pointerdown', 'mousemove', 'scroll'].forEach(t => on(w, t, act, {capture: true, passive: true}));
      on(d, 'click', click);
      on(d, 'auxclick', click);
      on(d, 'submit', submit);
    };

  try {
    C = __LL_CONFIG__;
    var s = d.currentScript || d.querySelector('script[src*="/t.js"]'), u = new URL(s.src);
    E = u.origin + u.pathname.replace(/\/t\.js$/, '');
    /* pasted twice (say in a template and a tag manager): the first copy does the work */
    if (w.__ll) {
      return;
    }
    w.__ll = 1;
    if ((C.dnt && (N.doNotTrack == '1' || w.doNotTrack == '1')) || (C.gpc && N.globalPrivacyControl === true)) {
      w.ll = () => 0;
    } else if (d.prerendering) {
      d.addEventListener('prerenderingchange', safe(start), {once: true});
    } else {
      start();
    }
  } catch (x) {
    /* never break the host page */
  }
})(window, document);
