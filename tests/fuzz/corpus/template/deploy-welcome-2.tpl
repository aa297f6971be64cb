Subject: How {{company|teams like yours}} use Example
--- html
<!doctype html>
<html><body style="font-family:sans-serif">
<p>Hi {{first_name|there}},</p>
<p>Three customers told us how they work: <a href="https://www.example.com/customers">read their stories</a>.</p>
<p style="font-size:small;color:#666"><a href="{{unsubscribe_url}}">Unsubscribe</a></p>
</body></html>
--- text
Hi {{first_name|there}},

Three customers told us how they work: https://www.example.com/customers

Unsubscribe: {{unsubscribe_url}}
