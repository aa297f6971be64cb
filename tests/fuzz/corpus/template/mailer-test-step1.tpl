Subject: Welcome, {{first_name|there}} (step 1) — café
--- html
<html><head><title>Welcome</title></head><body>
<p>Hi {{first_name|there}} from {{company|your company}},</p>
<p><a href="https://site.example/pricing?plan=pro&amp;x=1">See pricing</a>
and <a href='https://docs.example/start'>read the docs</a>,
or <a href="mailto:help@example.com">mail us</a>.</p>
<p><a href="{{unsubscribe_url}}">Unsubscribe</a></p>
</body></html>
--- text
Hi {{first_name|there}},
See pricing: https://site.example/pricing?plan=pro&x=1.
Docs (https://docs.example/start).
Unsubscribe: {{unsubscribe_url}}
