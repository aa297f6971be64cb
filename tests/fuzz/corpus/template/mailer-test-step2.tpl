Subject: Step 2 for {{first_name|there}}
--- html
<p>A case study: <a href="https://site.example/case?id=7">read it</a></p>
<p><a href="{{unsubscribe_url}}">Unsubscribe</a></p>
--- text
A case study: https://site.example/case?id=7
Unsubscribe: {{unsubscribe_url}}
