// The portal's one script: shows each "Copy" button (data-copy = the id of the field to copy)
// and copies the field's value when pressed. Without JavaScript the buttons stay hidden and the
// field stays selectable.
"use strict";
document.querySelectorAll("button[data-copy]").forEach(function (button) {
  var field = document.getElementById(button.dataset.copy);
  var said = document.querySelector('[data-copied-for="' + button.dataset.copy + '"]');
  if (!field) { return; }
  button.hidden = false;
  button.addEventListener("click", function () {
    var done = function () { if (said) { said.textContent = "Copied."; } };
    field.select();
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(field.value).then(done, function () {
        if (document.execCommand("copy")) { done(); }
      });
    } else if (document.execCommand("copy")) {
      // Plain http on a ward network is not a secure context: the older command still works.
      done();
    }
  });
});
