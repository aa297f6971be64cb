Subject: Step 3: last one
--- html
<p>Book a demo: <a href="https://site.example/demo">here</a> <b>{{name|friend}}</b></p>
--- text
Book a demo: https://site.example/demo
