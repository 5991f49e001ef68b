// The review queue's concept search: each "Search concepts" box fills its datalist from
// /mapping/concepts as the reviewer types (a short pause first, so typing is not a request
// per key).
document.querySelectorAll("input[data-concepts]").forEach(function (input) {
  let t;
  input.addEventListener("input", function () {
    clearTimeout(t);
    t = setTimeout(function () {
      fetch("/mapping/concepts?domain=" + encodeURIComponent(input.dataset.concepts) + "&q=" + encodeURIComponent(input.value), {credentials: "same-origin"})
        .then((r) => r.json()).then(function (data) {
          const list = document.getElementById(input.getAttribute("list"));
          list.replaceChildren();
          (data.results || []).forEach(function (item) {
            const o = document.createElement("option"); o.value = item.value; o.label = item.label; o.textContent = item.label; list.appendChild(o);
          });
        });
    }, 200);
  });
});
