// Small progressive enhancements; every page works without them.
(function () {
  "use strict";

  // The sidebar collapses behind a Menu button on narrow screens.
  document.addEventListener("click", function (event) {
    var toggle = event.target.closest(".nav-toggle");
    if (!toggle) return;
    var sidebar = document.getElementById(toggle.getAttribute("aria-controls"));
    var open = toggle.getAttribute("aria-expanded") !== "true";
    toggle.setAttribute("aria-expanded", String(open));
    sidebar.classList.toggle("is-open", open);
  });

  // <button data-dialog-open="id"> opens <dialog id="id">; [data-dialog-close] closes its dialog.
  document.addEventListener("click", function (event) {
    var opener = event.target.closest("[data-dialog-open]");
    if (opener) {
      var dialog = document.getElementById(opener.dataset.dialogOpen);
      if (dialog) dialog.showModal();
      return;
    }
    var closer = event.target.closest("[data-dialog-close]");
    if (closer) {
      var parent = closer.closest("dialog");
      if (parent) parent.close();
    }
  });

  // htmx 2 swaps no 4xx response by default. A 402 is the blocked-action
  // notice of the credit gate (billing/web.py): show it where the result goes.
  document.addEventListener("htmx:beforeSwap", function (event) {
    if (event.detail.xhr.status === 402) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });

  // A fragment may ask to close the dialog it was swapped into (HX-Trigger: closeDialog).
  document.body.addEventListener("closeDialog", function () {
    document.querySelectorAll("dialog[open]").forEach(function (dialog) {
      dialog.close();
    });
  });
})();
