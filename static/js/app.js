// Small progressive enhancements; every page works without them.
(function () {
  "use strict";

  // A button with aria-controls="id" and aria-expanded: flip aria-expanded and
  // return whether #id is now to be shown.
  function toggleExpanded(button) {
    var open = button.getAttribute("aria-expanded") !== "true";
    button.setAttribute("aria-expanded", String(open));
    return open;
  }
  function controlled(button) {
    return document.getElementById(button.getAttribute("aria-controls"));
  }

  // The sidebar collapses behind a Menu button on narrow screens.
  document.addEventListener("click", function (event) {
    var toggle = event.target.closest(".nav-toggle");
    if (!toggle) return;
    controlled(toggle).classList.toggle("is-open", toggleExpanded(toggle));
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
      if (parent) {
        // A Cancel link leads back to the page without JavaScript; here it just closes.
        event.preventDefault();
        parent.close();
      }
    }
  });

  // Content htmx swaps into a closed <dialog> opens it, focused on its first field.
  document.addEventListener("htmx:afterSwap", function (event) {
    var dialog = event.detail.target.parentElement;
    if (!dialog || dialog.tagName !== "DIALOG") return;
    if (!dialog.open) dialog.showModal();
    var field = dialog.querySelector("input:not([type=hidden]):not([disabled]), select, textarea");
    if (field) field.focus();
  });

  // A form sent back with errors: focus the first field at fault.
  document.addEventListener("htmx:afterSettle", function (event) {
    if (event.detail.xhr.status !== 422) return;
    var scope = document.querySelector("dialog[open]") || document;
    var invalid = scope.querySelector("[aria-invalid=true]");
    if (invalid) invalid.focus();
  });

  // htmx 2 swaps no 4xx response by default. A 402 is the blocked-action
  // notice of the credit gate (billing/web.py): show it where the result goes.
  // A 422 is a form sent back with its errors: show it too.
  document.addEventListener("htmx:beforeSwap", function (event) {
    var status = event.detail.xhr.status;
    if (status === 402 || status === 422) {
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

  // A status message swapped into a live region (.toast) fades after a while.
  var toastTimer = null;
  document.addEventListener("htmx:oobAfterSwap", function (event) {
    var region = event.detail.target;
    if (!region.classList || !region.classList.contains("toast")) return;
    region.classList.add("is-visible");
    clearTimeout(toastTimer);
    toastTimer = setTimeout(function () {
      region.classList.remove("is-visible");
    }, 6000);
  });

  // <button data-disclosure aria-controls="id" aria-expanded> shows and hides #id.
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-disclosure]");
    if (!button) return;
    var panel = controlled(button);
    var open = toggleExpanded(button);
    panel.hidden = !open;
    if (open) {
      var field = panel.querySelector("input:not([type=hidden]), select, textarea");
      if (field) field.focus();
    }
  });

  // <div data-show-if="name=value"> shows only while the radio `name` has `value`.
  function applyShowIf(root) {
    root.querySelectorAll("[data-show-if]").forEach(function (element) {
      var rule = element.dataset.showIf.split("=");
      var form = element.closest("form") || document;
      var checked = form.querySelector('input[name="' + rule[0] + '"]:checked');
      element.hidden = !checked || checked.value !== rule[1];
    });
  }
  document.addEventListener("change", function (event) {
    if (event.target.type === "radio") applyShowIf(event.target.closest("form") || document);
  });
  document.addEventListener("htmx:load", function (event) {
    applyShowIf(event.detail.elt.querySelectorAll ? event.detail.elt : document);
  });

  // Member pickers (components/member_picker.html): an ARIA combobox whose
  // options the server sends as you type; chosen members become chips.
  function pickerOf(element) {
    return element.closest("[data-picker]");
  }
  function pickerParts(picker) {
    var input = picker.querySelector("[data-picker-input]");
    return {
      input: input,
      listbox: document.getElementById(input.getAttribute("aria-controls")),
      chosen: picker.querySelector("[data-picker-chosen]"),
    };
  }
  function options(listbox) {
    return Array.prototype.slice.call(listbox.querySelectorAll("[role=option]"));
  }
  function closeOptions(picker) {
    var parts = pickerParts(picker);
    parts.listbox.hidden = true;
    parts.input.setAttribute("aria-expanded", "false");
    parts.input.removeAttribute("aria-activedescendant");
  }
  function setActive(picker, index) {
    var parts = pickerParts(picker);
    var all = options(parts.listbox);
    all.forEach(function (option, i) {
      option.classList.toggle("is-active", i === index);
      option.setAttribute("aria-selected", String(i === index));
    });
    if (all[index]) {
      parts.input.setAttribute("aria-activedescendant", all[index].id);
      all[index].scrollIntoView({ block: "nearest" });
    }
  }
  function choose(picker, option) {
    var parts = pickerParts(picker);
    var name = picker.dataset.name;
    var value = option.dataset.value;
    if (!picker.hasAttribute("data-multiple")) parts.chosen.innerHTML = "";
    if (!parts.chosen.querySelector('input[value="' + value + '"]')) {
      var chip = document.createElement("li");
      chip.className = "chip";
      var hidden = document.createElement("input");
      hidden.type = "hidden";
      hidden.name = name;
      hidden.value = value;
      var label = document.createElement("span");
      label.className = "chip-label";
      label.textContent = option.dataset.label;
      var remove = document.createElement("button");
      remove.type = "button";
      remove.className = "chip-remove";
      remove.setAttribute("data-picker-remove", "");
      remove.setAttribute("aria-label", "Remove " + option.dataset.label);
      remove.textContent = "\u00d7";
      chip.append(hidden, label, remove);
      parts.chosen.append(chip);
    }
    parts.input.value = "";
    closeOptions(picker);
    // Refocusing fires the box's focus search: its answer must not reopen the
    // list just closed (it would cover what comes next). Typing opens it again.
    parts.input.dataset.justChose = "true";
    parts.input.focus();
  }
  ["input", "focusout"].forEach(function (type) {
    document.addEventListener(type, function (event) {
      if (event.target.matches && event.target.matches("[data-picker-input]")) {
        delete event.target.dataset.justChose;
      }
    });
  });
  document.addEventListener("htmx:afterSwap", function (event) {
    var listbox = event.detail.target;
    if (listbox.getAttribute("role") !== "listbox") return;
    var input = document.querySelector('[aria-controls="' + listbox.id + '"]');
    if (!input || document.activeElement !== input || input.dataset.justChose) return;
    options(listbox).forEach(function (option, i) {
      option.id = listbox.id + "-" + i;
    });
    listbox.hidden = false;
    input.setAttribute("aria-expanded", "true");
    setActive(pickerOf(input), -1);
  });
  document.addEventListener("keydown", function (event) {
    var input = event.target.closest && event.target.closest("[data-picker-input]");
    if (!input) return;
    var picker = pickerOf(input);
    var listbox = pickerParts(picker).listbox;
    var all = options(listbox);
    var active = all.findIndex(function (o) {
      return o.classList.contains("is-active");
    });
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      if (listbox.hidden) return;
      var step = event.key === "ArrowDown" ? 1 : -1;
      setActive(picker, Math.max(0, Math.min(all.length - 1, active + step)));
    } else if (event.key === "Enter") {
      event.preventDefault(); // Enter chooses; it never submits the form from here
      if (!listbox.hidden && all[active >= 0 ? active : 0]) choose(picker, all[active >= 0 ? active : 0]);
    } else if (event.key === "Escape" && !listbox.hidden) {
      event.preventDefault();
      event.stopPropagation(); // close the options, not the dialog around them
      closeOptions(picker);
    }
  });
  document.addEventListener("cancel", function (event) {
    // Escape in an open picker closes the options; the dialog stays open.
    var open = event.target.querySelector && event.target.querySelector("[data-picker-input][aria-expanded=true]");
    if (open) {
      event.preventDefault();
      closeOptions(pickerOf(open));
    }
  }, true);
  document.addEventListener("mousedown", function (event) {
    var option = event.target.closest("[data-picker] [role=option]");
    if (option) {
      event.preventDefault(); // keep the focus in the search box
      choose(pickerOf(option), option);
      return;
    }
    document.querySelectorAll("[data-picker-input][aria-expanded=true]").forEach(function (input) {
      if (!pickerOf(input).contains(event.target)) closeOptions(pickerOf(input));
    });
  });
  document.addEventListener("click", function (event) {
    var remove = event.target.closest("[data-picker-remove]");
    if (!remove) return;
    var picker = pickerOf(remove);
    remove.closest(".chip").remove();
    pickerParts(picker).input.focus();
  });
})();
