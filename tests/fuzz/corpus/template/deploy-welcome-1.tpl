# A nurture template: a Subject line, then an HTML part and a text part (either may be left out).
# {{field}} is a profile field (HTML-escaped in the HTML part); {{field|fallback}} when it is empty.
# Every http(s) link becomes a signed click link; an open pixel is added to the HTML part.
Subject: Welcome, {{first_name|there}}
--- html
<!doctype html>
<html><body style="font-family:sans-serif">
<p>Hi {{first_name|there}},</p>
<p>Thanks for your interest in Example. The <a href="https://www.example.com/start">getting started guide</a>
takes ten minutes.</p>
<p style="font-size:small;color:#666">You get this because you asked us to keep in touch.
<a href="{{unsubscribe_url}}">Unsubscribe</a>.</p>
</body></html>
--- text
Hi {{first_name|there}},

Thanks for your interest in Example. The getting started guide takes ten minutes:
https://www.example.com/start

Unsubscribe: {{unsubscribe_url}}
