(function(){
  function key(cell){
    var v = cell.getAttribute('data-v');
    if (v !== null && v !== '') { var n = parseFloat(v); if (!isNaN(n)) return [0, n]; }
    var t = cell.textContent.trim();
    return t === '' ? [2, ''] : [1, t.toLowerCase()];
  }
  function compare(a, b){
    if (a[0] !== b[0]) return a[0] - b[0];
    if (a[1] < b[1]) return -1;
    if (a[1] > b[1]) return 1;
    return 0;
  }
  document.querySelectorAll('table.sortable').forEach(function(table){
    var heads = table.tHead ? table.tHead.rows[0].cells : [];
    Array.prototype.forEach.call(heads, function(th, column){
      th.setAttribute('title', 'click to sort');
      th.addEventListener('click', function(){
        var ascending = th.getAttribute('aria-sort') !== 'ascending';
        Array.prototype.forEach.call(heads, function(h){ h.removeAttribute('aria-sort'); });
        th.setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function(r1, r2){
          var a = key(r1.cells[column]), b = key(r2.cells[column]);
          if (a[0] === 2 || b[0] === 2) return a[0] - b[0];
          return ascending ? compare(a, b) : compare(b, a);
        });
        rows.forEach(function(r){ body.appendChild(r); });
      });
    });
  });
  document.querySelectorAll('input.filter').forEach(function(input){
    var table = document.getElementById(input.getAttribute('data-table'));
    var counter = document.getElementById(input.getAttribute('data-table') + '-count');
    if (!table) return;
    input.addEventListener('input', function(){
      var query = input.value.trim().toLowerCase();
      var rows = table.tBodies[0].rows, shown = 0;
      Array.prototype.forEach.call(rows, function(row){
        var hit = query === '' || row.textContent.toLowerCase().indexOf(query) >= 0;
        row.style.display = hit ? '' : 'none';
        if (hit) shown += 1;
      });
      if (counter) counter.textContent = shown + ' of ' + rows.length + ' rows';
    });
  });
})();
