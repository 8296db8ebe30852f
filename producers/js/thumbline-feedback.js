/*
 * thumbline-feedback.js: send end-user feedback from a web page to the thumbline gateway.
 * No dependencies, no build step. Use an *ingest* key: it can write feedback for its
 * project and read nothing, so it is safe in a page.
 *
 *   <script src="thumbline-feedback.js"></script>
 *   <script>
 *     const fb = ThumblineFeedback.client({ url: "https://feedback.example.com", key: "tl_..." });
 *     fb.thumbDown(traceId, { comment: "wrong city", userId: "u_42" });
 *     ThumblineFeedback.attach(document.querySelector("#answer-1"), fb);  // wires data-thumbline buttons
 *   </script>
 *
 * Every event gets an event_id when it is created, and a retry (after a 503 or 429,
 * honouring Retry-After) sends the same id: the store keeps one row.
 */
(function (global) {
  "use strict";

  function newId() {
    if (global.crypto && global.crypto.randomUUID) return global.crypto.randomUUID().replace(/-/g, "");
    return Date.now().toString(16) + Math.random().toString(16).slice(2, 14);
  }

  function sleep(ms) {
    return new Promise(function (resolve) { setTimeout(resolve, ms); });
  }

  function client(options) {
    var url = String(options.url || "").replace(/\/+$/, "");
    var key = options.key;
    var retries = options.retries === undefined ? 3 : options.retries;
    var onError = options.onError || function (error) { console.error("thumbline:", error); };
    if (!url) throw new Error("ThumblineFeedback.client needs { url } (the gateway)");

    function post(events, attempt) {
      var headers = { "Content-Type": "application/json" };
      if (key) headers.Authorization = "Bearer " + key;
      return fetch(url + "/v1/feedback", {
        method: "POST", headers: headers, body: JSON.stringify(events), keepalive: true,
      }).then(function (response) {
        if ((response.status === 503 || response.status === 429) && attempt < retries) {
          var wait = Number(response.headers.get("Retry-After") || 1);
          return sleep(Math.min(wait, 30) * 1000).then(function () { return post(events, attempt + 1); });
        }
        return response.json().then(function (body) {
          if (response.status !== 202) {
            var error = new Error("thumbline gateway answered " + response.status + ": " +
              (body.error || JSON.stringify(body.results)));
            error.status = response.status;
            error.body = body;
            throw error;
          }
          return body;
        });
      });
    }

    /** Send one feedback event (thumbline's FeedbackEvent fields); resolves to the gateway's answer. */
    function send(event) {
      var copy = {};
      for (var name in event) if (Object.prototype.hasOwnProperty.call(event, name)) copy[name] = event[name];
      copy.event_id = copy.event_id || newId();
      return post(copy, 0).catch(function (error) { onError(error, copy); throw error; });
    }

    function fields(traceId, extra) {
      var event = { trace_id: traceId };
      extra = extra || {};
      if (extra.comment) event.comment = extra.comment;
      if (extra.userId) event.user_id = extra.userId;
      if (extra.sessionId) event.session_id = extra.sessionId;
      if (extra.spanId) event.span_id = extra.spanId;
      if (extra.name) event.name = extra.name;
      if (extra.metadata) event.metadata = extra.metadata;
      return event;
    }

    function kind(event, k, value) {
      event.kind = k;
      if (value !== undefined) event.value = value;
      return event;
    }

    return {
      send: send,
      thumbUp: function (traceId, extra) { return send(kind(fields(traceId, extra), "thumb", "up")); },
      thumbDown: function (traceId, extra) { return send(kind(fields(traceId, extra), "thumb", "down")); },
      rating: function (traceId, stars, extra) { return send(kind(fields(traceId, extra), "rating", stars)); },
      comment: function (traceId, text, extra) { return send(kind(fields(traceId, extra), "text", text)); },
      /** An implicit signal: copied, regenerated, shared... */
      signal: function (traceId, name, extra) {
        var event = kind(fields(traceId, extra), "signal");
        event.name = name;
        return send(event);
      },
    };
  }

  /**
   * Wire the feedback controls inside `root` (an answer's element, with data-trace-id):
   * [data-thumbline=up], [data-thumbline=down], a form [data-thumbline=comment] with a
   * textarea, and [data-thumbline=copy] (copies [data-thumbline=text] and sends "copied").
   */
  function attach(root, fb, extra) {
    var traceId = root.getAttribute("data-trace-id");
    if (!traceId) throw new Error("ThumblineFeedback.attach: the element needs data-trace-id");
    function on(selector, type, handler) {
      var element = root.querySelector('[data-thumbline="' + selector + '"]');
      if (element) element.addEventListener(type, handler);
      return element;
    }
    function mark(state) { root.setAttribute("data-thumbline-state", state); }
    function sent(promise) {
      mark("sending");
      return promise.then(function () { mark("sent"); }, function () { mark("failed"); });
    }
    on("up", "click", function () { sent(fb.thumbUp(traceId, extra)); });
    on("down", "click", function () { sent(fb.thumbDown(traceId, extra)); });
    on("comment", "submit", function (event) {
      event.preventDefault();
      var box = event.target.querySelector("textarea, input[type=text]");
      if (box && box.value.trim()) sent(fb.comment(traceId, box.value.trim(), extra));
    });
    on("copy", "click", function () {
      var text = root.querySelector('[data-thumbline="text"]');
      if (text && global.navigator.clipboard) {
        global.navigator.clipboard.writeText(text.textContent).catch(function () {});
      }
      sent(fb.signal(traceId, "copied", extra));
    });
  }

  global.ThumblineFeedback = { client: client, attach: attach, newId: newId };
})(typeof window !== "undefined" ? window : this);
