Subject: A 20-minute demo, {{first_name|there}}?
--- html
<!doctype html>
<html><body style="font-family:sans-serif">
<p>Hi {{first_name|there}},</p>
<p>If you would like to see Example on your own data, <a href="https://www.example.com/demo">book a demo</a>.</p>
<p style="font-size:small;color:#666"><a href="{{unsubscribe_url}}">Unsubscribe</a></p>
</body></html>
--- text
Hi {{first_name|there}},

If you would like to see Example on your own data, book a demo: https://www.example.com/demo

Unsubscribe: {{unsubscribe_url}}
